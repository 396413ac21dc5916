"""Operators that put files into Azure OpenAI / Foundry: import from a URL, multipart upload, plain upload.

Each operator is thin: it checks its arguments (the non-templated ones in the constructor, the templated
ones before the first request), asks :mod:`~airflow_provider_aoai.lifecycle` whether an earlier try already
did the work, calls one hook method, and returns the service's object as plain JSON for XCom -- or, with
``wait_for_processing=True``, waits for the file to be ``processed`` (in the worker, or in the triggerer when
``deferrable``), the same way the sensor does. No HTTP here; the hook and the client own it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar, cast

from airflow.providers.common.compat.sdk import BaseOperator

from airflow_provider_aoai.config import default_deferrable
from airflow_provider_aoai.exceptions import AzureOpenAIInvalidArgumentError
from airflow_provider_aoai.lifecycle import (
    FileMemory,
    UploadMemory,
    inputs_digest,
    is_last_try,
    task_state_store,
)
from airflow_provider_aoai.lineage import AzureOpenAILineageMixin
from airflow_provider_aoai.models import DEFAULT_MAX_CONCURRENCY, DEFAULT_PART_BYTES, File, Upload
from airflow_provider_aoai.options import MultipartOptions, WaitOptions
from airflow_provider_aoai.validation import check_bool, check_expires_after

if TYPE_CHECKING:
    from airflow_provider_aoai.hooks import AzureOpenAIHook

# What an operator returns: the File, or the Upload with its nested File (plain JSON for XCom).
ResultT = TypeVar("ResultT", File, Upload)

DEFAULT_WAIT_POLL_INTERVAL = 10.0
DEFAULT_WAIT_TIMEOUT = 60 * 60.0


class _AzureOpenAIFileOperator(AzureOpenAILineageMixin, BaseOperator):
    """Shared by the operators: the hook, the optional wait for processing, being killed, and lineage.

    :param aoai_conn_id: the ``aoai`` connection (templated).
    :param wait_for_processing: wait until the new file is ``processed``; fail if it ends in ``error``.
    :param deferrable: wait in the triggerer; defaults to ``[operators] default_deferrable``.
    :param poll_interval: seconds between status checks while waiting (at least 0.05).
    :param wait_timeout: seconds to wait for processing before failing.
    :param force_new: always create a new file, even when an earlier try (or run before a clear) of this task
        instance already created one for the same inputs (Airflow 3.3+, where tries remember).
    """

    ui_color = "#cfe5ff"

    def __init__(
        self,
        *,
        aoai_conn_id: str = "aoai_default",
        wait_for_processing: bool = False,
        deferrable: bool | None = None,
        poll_interval: float = DEFAULT_WAIT_POLL_INTERVAL,
        wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
        force_new: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.aoai_conn_id = aoai_conn_id
        self.wait_for_processing = check_bool(wait_for_processing, "wait_for_processing")
        self.deferrable = default_deferrable() if deferrable is None else check_bool(deferrable, "deferrable")
        self.wait_options = WaitOptions.checked(poll_interval, wait_timeout, timeout_name="wait_timeout")
        self.force_new = check_bool(force_new, "force_new")
        self._stop = threading.Event()

    @cached_property
    def hook(self) -> AzureOpenAIHook:
        from airflow_provider_aoai.hooks import AzureOpenAIHook

        return AzureOpenAIHook(aoai_conn_id=self.aoai_conn_id)

    @staticmethod
    def _with_file(result: ResultT, file: File) -> ResultT:
        """``result`` (a File, or an Upload with a nested File) updated with the file's latest state."""
        if result.get("object") == "upload":
            return cast(ResultT, {**result, "file": file})
        return cast(ResultT, dict(file))

    def _finish(self, result: ResultT, file_id: str) -> ResultT:
        self.log.info("File id: %s", file_id)
        if not self.wait_for_processing:
            return self._record_file_result(result)
        if not self.deferrable:
            file = self.hook.waits.wait(file_id, self.wait_options, self._stop)
            return self._record_file_result(self._with_file(result, file))
        from airflow_provider_aoai.triggers import AzureOpenAIFileStatusTrigger

        self.defer(
            trigger=AzureOpenAIFileStatusTrigger(
                file_id=file_id,
                aoai_conn_id=self.aoai_conn_id,
                poll_interval=self.wait_options.poll_interval,
                end_time=time.time() + self.wait_options.timeout,
            ),
            method_name="execute_complete",
            kwargs={"result": result},
        )
        raise RuntimeError("defer() returned")  # pragma: no cover - defer always raises TaskDeferred

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None, result: Any = None) -> Any:
        """Resume after processing: the result with its processed File, or raise what the event says."""
        from airflow_provider_aoai.triggers import file_from_event

        expected = None
        if isinstance(result, dict):
            expected = result["file"].get("id") if isinstance(result.get("file"), dict) else result.get("id")
        file = file_from_event(event, expected_file_id=expected)
        self.log.info("File %s is %s", file.get("id"), file.get("status"))
        if isinstance(result, dict) and result.get("object") == "upload":
            return self._record_file_result(self._with_file(cast(Upload, result), file), context)
        return self._record_file_result(self._with_file(file, file), context)

    def on_kill(self) -> None:
        """Stop at once: requests in flight are aborted; the work that started it undoes what it must."""
        self._stop.set()
        if "hook" in self.__dict__:
            self.hook.abort_in_flight()

    def _file_memory(self, context: Any) -> FileMemory | None:
        store = task_state_store(context, self.log)
        return FileMemory(store, self.log) if store is not None else None

    def _create_once(
        self,
        context: Any,
        inputs: str,
        *,
        filename: str,
        purpose: str,
        size: int | None,
        create: Any,
        content_md5: Any = None,
    ) -> File:
        """``create()`` the file unless an earlier try with the same ``inputs`` did; remember what happens."""
        memory = self._file_memory(context)
        if memory is not None:
            if self.force_new:
                memory.forget()
            else:
                earlier = memory.reattach(
                    self.hook.files,
                    inputs,
                    filename=filename,
                    purpose=purpose,
                    size=size,
                    content_md5=content_md5,
                )
                if earlier is not None:
                    return earlier
            memory.asking(inputs)
        file: File = create()
        if memory is not None:
            try:
                memory.created(file["id"], inputs)
            except Exception as exc:
                self.log.warning("Could not record file %s for later tries: %s", file["id"], exc)
        return file


class AzureOpenAIImportFileOperator(_AzureOpenAIFileOperator):
    """Create a file by having the service download it from ``content_url`` (e.g. a blob SAS URL).

    Data plane connections only (the v1 and Foundry surfaces have no import). The URL's query string,
    which holds a SAS signature, is registered with the secrets masker as soon as it is rendered.
    Returns the File dict; its ``id`` is the XCom return value's ``id``. On Airflow 3.3+ a retry (or a clear)
    with the same inputs re-attaches to the file an earlier try created instead of importing again.

    :param content_url: http(s) URL the service can GET (templated).
    :param filename: name of the file in the service (templated).
    :param purpose: e.g. ``fine-tune`` or ``batch`` (templated).
    """

    template_fields: Sequence[str] = ("content_url", "filename", "purpose", "aoai_conn_id")

    def __init__(self, *, content_url: str, filename: str, purpose: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.content_url = content_url
        self.filename = filename
        self.purpose = purpose

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        super().render_template_fields(context, jinja_env)
        from airflow_provider_aoai.credentials import mask_url_secrets

        if isinstance(self.content_url, str):
            mask_url_secrets(self.content_url)  # before Airflow records the rendered fields

    def execute(self, context: Any) -> File:
        files = self.hook.files
        request = files.prepare_import(
            content_url=self.content_url, filename=self.filename, purpose=self.purpose
        )
        inputs = inputs_digest(
            kind="import",
            endpoint=files.client.base_url,
            content_url=request.content_url,
            filename=request.filename,
            purpose=request.purpose,
        )
        file = self._create_once(
            context,
            inputs,
            filename=request.filename,
            purpose=request.purpose,
            size=None,
            create=lambda: files.send_import(request),
        )
        return self._finish(file, file["id"])


class _AzureOpenAIUploadOperator(_AzureOpenAIFileOperator):
    """Shared by the upload operators: what they upload, when it expires, and the check of a dataset.

    :param source: local path, ``file://``/``memory://``/any fsspec URL, or ``ObjectStoragePath`` (templated).
    :param purpose: e.g. ``fine-tune``, ``batch``, ``assistants`` (templated).
    :param filename: name in the service; defaults to the source's name (templated).
    :param expires_after: the file expires this many seconds after its creation (batch input files: 14 to 30
        days, others 1 hour to 30 days; with one, a resource holds 10,000 batch input files instead of 500).
        The v1 API and data plane api-versions from 2025-03-01-preview take it.
    :param validate: check a ``batch`` or ``fine-tune`` dataset against the service's rules
        (:func:`~airflow_provider_aoai.datasets.validate_dataset`) before the first request, and fail with
        :class:`AzureOpenAIDatasetError` naming its problems and their lines, creating nothing. ``False``
        skips it (the first line is still checked).
    """

    def __init__(
        self,
        *,
        source: Any,
        purpose: str,
        filename: str | None = None,
        expires_after: int | None = None,
        validate: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.source = source
        self.purpose = purpose
        self.filename = filename
        # The widest range now; the purpose's own, once templates are rendered, before the first request.
        self.expires_after = check_expires_after(expires_after)
        self.validate = check_bool(validate, "validate")


class AzureOpenAIMultipartUploadOperator(_AzureOpenAIUploadOperator):
    """Upload a file of up to 9 GiB with the Uploads API: parts sent in parallel, completed with its md5.

    Progress (bytes, percent, MB/s, ETA) is logged every ``progress_interval`` seconds. Returns the Upload
    dict with its nested File (the file id is at ``["file"]["id"]``). A dataset checked before the upload
    (``validate``) is read once for the check and the md5 together: the upload needs no md5 pass of its own.

    On Airflow 3.3+ the upload survives its try: the upload id, part size, source fingerprint and accepted
    part ids are kept in the ``task_state_store``, and a retry or a clear of this task instance sends only the
    parts not yet accepted (or re-attaches to the completed file). A failure the next try can resume from
    keeps the upload; a kill (``on_kill``, mark failed), the last try failing, bad input and a changed source
    cancel it.

    :param mime_type: defaults to ``text/jsonl`` for ``.jsonl`` names (templated).
    :param part_size: bytes per part, 1 MiB to 512 MiB (default 64 MiB).
    :param max_concurrency: parts in flight at once, 1 to 32.
    :param progress_interval: seconds between progress log lines.
    """

    template_fields: Sequence[str] = ("source", "purpose", "filename", "mime_type", "aoai_conn_id")

    def __init__(
        self,
        *,
        mime_type: str | None = None,
        part_size: int = DEFAULT_PART_BYTES,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        progress_interval: float = 5.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if mime_type is not None and not isinstance(mime_type, str):
            raise AzureOpenAIInvalidArgumentError(
                "mime_type", f"must be a string, got {type(mime_type).__name__}"
            )
        self.mime_type = mime_type
        self.options = MultipartOptions.checked(part_size, max_concurrency, progress_interval)

    def execute(self, context: Any) -> Upload:
        hook = self.hook
        store = task_state_store(context, self.log)
        memory = UploadMemory(store, self.log) if store is not None else None
        resume_from = memory.load() if memory is not None else None
        if resume_from is not None and self.force_new:
            self.log.info("force_new: not resuming upload %s", resume_from.upload_id)
            if resume_from.file_id is None:
                hook.cancel_upload_quietly(resume_from.upload_id)
            memory.forget()  # type: ignore[union-attr]
            resume_from = None
        keep = memory is not None and not is_last_try(context, self.retries)
        try:
            upload = hook.multipart.run(
                source=self.source,
                purpose=self.purpose,
                filename=self.filename,
                mime_type=self.mime_type,
                options=self.options,
                stop=self._stop,
                resume_from=resume_from,
                on_checkpoint=memory.save if memory is not None else None,
                keep_on_failure=lambda exc: keep and not self._stop.is_set(),
                on_md5=self._record_md5,
                expires_after=self.expires_after,
                validate=self.validate,
            )
        except BaseException:
            # An upload an earlier try kept must not outlive a try that will not be retried, even when this
            # one failed before it got to it (a source gone, bad input): nothing stays pending.
            if (
                resume_from is not None
                and resume_from.file_id is None
                and not (keep and not self._stop.is_set())
            ):
                hook.cancel_upload_quietly(resume_from.upload_id)
            raise
        return self._finish(upload, upload["file"]["id"])


class AzureOpenAIUploadFileOperator(_AzureOpenAIUploadOperator):
    """Upload a file of up to 512 MiB in one streamed request (``POST files``).

    Works on every surface; on a Foundry project connection it uploads agent files
    (``{project}/files?api-version=v1``). Returns the File (or Foundry FileInfo) dict. On Airflow 3.3+ a retry
    (or a clear) with the same inputs -- the same source, unchanged -- re-attaches to the file an earlier try
    created instead of uploading again.
    """

    template_fields: Sequence[str] = ("source", "purpose", "filename", "aoai_conn_id")

    def execute(self, context: Any) -> File:
        from airflow_provider_aoai.sources import md5_of

        files = self.hook.files
        request = files.prepare_upload(
            source=self.source,
            purpose=self.purpose,
            filename=self.filename,
            expires_after=self.expires_after,
            validate=self.validate,
        )
        source = request.source
        inputs = inputs_digest(
            kind="upload_file",
            endpoint=files.client.base_url,
            source=source.description,
            fingerprint=source.fingerprint.to_json(),
            filename=request.filename,
            purpose=request.purpose,
            **({"expires_after": request.expires_after} if request.expires_after is not None else {}),
        )
        file = self._create_once(
            context,
            inputs,
            filename=request.filename,
            purpose=request.purpose,
            size=source.size,
            content_md5=lambda: request.md5 or md5_of(source),
            create=lambda: files.send_upload(request, stop=self._stop),
        )
        return self._finish(file, file["id"])


# Delete and prune, and dataset preparation, live in modules of their own; re-exported so that every
# operator imports from here. Hence imports at the end.
from airflow_provider_aoai.dataset_operators import AzureOpenAISplitBatchFileOperator  # noqa: E402, F401
from airflow_provider_aoai.delete_operators import (  # noqa: E402, F401
    AzureOpenAIDeleteFileOperator,
    AzureOpenAIPruneFilesOperator,
)
