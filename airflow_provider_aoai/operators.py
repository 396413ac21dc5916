"""Operators that put files into Azure OpenAI / Foundry: import from a URL, multipart upload, plain upload.

Each operator is thin: it calls one hook method (which validates every argument before any request), then
returns the service's object as plain JSON for XCom, or, with ``wait_for_processing=True``, waits for the
file to be ``processed`` (in the worker, or in the triggerer when ``deferrable``), the same way the sensor
does. No HTTP here; the hook and the client own it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator

from airflow_provider_aoai.lineage import AzureOpenAILineageMixin
from airflow_provider_aoai.models import DEFAULT_MAX_CONCURRENCY, DEFAULT_PART_BYTES, File, Upload
from airflow_provider_aoai.sensors import default_deferrable

if TYPE_CHECKING:
    from airflow_provider_aoai.hooks import AzureOpenAIHook

DEFAULT_WAIT_POLL_INTERVAL = 10.0
DEFAULT_WAIT_TIMEOUT = 60 * 60.0


class _AzureOpenAIFileOperator(AzureOpenAILineageMixin, BaseOperator):
    """Shared by the operators: the hook, and the optional wait for processing.

    :param aoai_conn_id: the ``aoai`` connection (templated).
    :param wait_for_processing: wait until the new file is ``processed``; fail if it ends in ``error``.
    :param deferrable: wait in the triggerer; defaults to ``[operators] default_deferrable``.
    :param poll_interval: seconds between status checks while waiting.
    :param wait_timeout: seconds to wait for processing before failing.
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
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.aoai_conn_id = aoai_conn_id
        self.wait_for_processing = wait_for_processing
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.poll_interval = poll_interval
        self.wait_timeout = wait_timeout

    @cached_property
    def hook(self) -> AzureOpenAIHook:
        from airflow_provider_aoai.hooks import AzureOpenAIHook

        return AzureOpenAIHook(aoai_conn_id=self.aoai_conn_id)

    @staticmethod
    def _with_file(result: dict[str, Any], file: File) -> dict[str, Any]:
        """``result`` (a File, or an Upload with a nested File) updated with the file's latest state."""
        if result.get("object") == "upload":
            return {**result, "file": file}
        return file

    def _finish(self, result: dict[str, Any], file_id: str) -> dict[str, Any]:
        self.log.info("File id: %s", file_id)
        if not self.wait_for_processing:
            return self._record_file_result(result)
        if not self.deferrable:
            file = self.hook.wait_for_file(
                file_id=file_id, poll_interval=self.poll_interval, timeout=self.wait_timeout
            )
            return self._record_file_result(self._with_file(result, file))
        from airflow_provider_aoai.triggers import AzureOpenAIFileStatusTrigger

        self.defer(
            trigger=AzureOpenAIFileStatusTrigger(
                file_id=file_id,
                aoai_conn_id=self.aoai_conn_id,
                poll_interval=self.poll_interval,
                end_time=time.time() + self.wait_timeout,
            ),
            method_name="execute_complete",
            kwargs={"result": result},
        )

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None, result: Any = None) -> Any:
        """Resume after processing: return the result with its processed File, or raise what the event says."""
        from airflow_provider_aoai.triggers import file_from_event

        file = file_from_event(event)
        self.log.info("File %s is %s", file.get("id"), file.get("status"))
        return self._record_file_result(
            self._with_file(result if isinstance(result, dict) else file, file), context
        )


class AzureOpenAIImportFileOperator(_AzureOpenAIFileOperator):
    """Create a file by having the service download it from ``content_url`` (e.g. a blob SAS URL).

    Data plane connections only (the v1 and Foundry surfaces have no import). The URL's query string,
    which holds a SAS signature, is registered with the secrets masker as soon as it is rendered.
    Returns the File dict; its ``id`` is the XCom return value's ``id``.

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
        from airflow_provider_aoai.hooks import mask_url_secrets

        if isinstance(self.content_url, str):
            mask_url_secrets(self.content_url)  # before Airflow records the rendered fields

    def execute(self, context: Any) -> File:
        file = self.hook.import_file(
            content_url=self.content_url, filename=self.filename, purpose=self.purpose
        )
        return self._finish(file, file["id"])


class AzureOpenAIMultipartUploadOperator(_AzureOpenAIFileOperator):
    """Upload a file of up to 9 GiB with the Uploads API: parts sent in parallel, completed with its md5.

    Progress (bytes, percent, MB/s, ETA) is logged every ``progress_interval`` seconds. When the task fails
    or is killed the upload is cancelled, so nothing is left half-uploaded. Returns the Upload dict with
    its nested File (the file id is at ``["file"]["id"]``).

    :param source: local path, ``file://``/``memory://``/any fsspec URL, or ``ObjectStoragePath`` (templated).
    :param purpose: e.g. ``fine-tune`` (templated).
    :param filename: name in the service; defaults to the source's name (templated).
    :param mime_type: defaults to ``text/jsonl`` for ``.jsonl`` names (templated).
    :param part_size: bytes per part, 1 MiB to 512 MiB (default 64 MiB).
    :param max_concurrency: parts in flight at once (memory is about ``max_concurrency x part_size``).
    """

    template_fields: Sequence[str] = ("source", "purpose", "filename", "mime_type", "aoai_conn_id")

    def __init__(
        self,
        *,
        source: Any,
        purpose: str,
        filename: str | None = None,
        mime_type: str | None = None,
        part_size: int = DEFAULT_PART_BYTES,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        progress_interval: float = 5.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.source = source
        self.purpose = purpose
        self.filename = filename
        self.mime_type = mime_type
        self.part_size = part_size
        self.max_concurrency = max_concurrency
        self.progress_interval = progress_interval
        self._stop = threading.Event()
        self._upload_id: str | None = None

    def _remember_upload(self, upload_id: str) -> None:
        self._upload_id = upload_id

    def execute(self, context: Any) -> Upload:
        upload = self.hook.upload_multipart(
            source=self.source,
            purpose=self.purpose,
            filename=self.filename,
            mime_type=self.mime_type,
            part_size=self.part_size,
            max_concurrency=self.max_concurrency,
            progress_interval=self.progress_interval,
            stop=self._stop,
            on_upload_created=self._remember_upload,
            on_md5=self._record_md5,
        )
        return self._finish(upload, upload["file"]["id"])

    def on_kill(self) -> None:
        """Stop sending parts and cancel the upload on the service."""
        self._stop.set()
        if self._upload_id is not None:
            self.hook.cancel_upload_quietly(self._upload_id)


class AzureOpenAIUploadFileOperator(_AzureOpenAIFileOperator):
    """Upload a file of up to 512 MiB in one streamed request (``POST files``).

    Works on every surface; on a Foundry project connection it uploads agent files
    (``{project}/files?api-version=v1``). Returns the File (or Foundry FileInfo) dict.

    :param source: local path, ``file://``/fsspec URL, or ``ObjectStoragePath`` (templated).
    :param purpose: e.g. ``assistants``, ``fine-tune``, ``batch``, ``vision`` (templated).
    :param filename: name in the service; defaults to the source's name (templated).
    """

    template_fields: Sequence[str] = ("source", "purpose", "filename", "aoai_conn_id")

    def __init__(self, *, source: Any, purpose: str, filename: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.source = source
        self.purpose = purpose
        self.filename = filename

    def execute(self, context: Any) -> File:
        file = self.hook.upload_file(source=self.source, purpose=self.purpose, filename=self.filename)
        return self._finish(file, file["id"])


# Delete and prune live in their own module; re-exported so that every operator imports from here.
from airflow_provider_aoai.delete_operators import (  # noqa: F401
    AzureOpenAIDeleteFileOperator,
    AzureOpenAIPruneFilesOperator,
)
