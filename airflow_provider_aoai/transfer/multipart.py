"""Whole files through the Uploads API: parts in parallel, the md5 on the way, complete once, resume.

:class:`~airflow_provider_aoai.options.MultipartOptions` holds what an operator knows when the DAG is parsed
(checked then, once);
:meth:`MultipartUploads.run` checks the rest (the templated source, purpose, name) before any request and
drives a :class:`~airflow_provider_aoai.transfer.resumable.ResumableUpload`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from airflow_provider_aoai.exceptions import AzureOpenAIInvalidArgumentError
from airflow_provider_aoai.models import DEFAULT_MAX_CONCURRENCY, DEFAULT_PART_BYTES, Upload
from airflow_provider_aoai.options import MultipartOptions
from airflow_provider_aoai.transfer.checkpoint import UploadCheckpoint
from airflow_provider_aoai.transfer.parts import Progress, check_part_count
from airflow_provider_aoai.transfer.resumable import CheckpointListener, KeepPolicy, ResumableUpload
from airflow_provider_aoai.validation import check_stop, check_text

if TYPE_CHECKING:
    from airflow_provider_aoai.resources.files import Files
    from airflow_provider_aoai.resources.uploads import Uploads


def _check_callback(name: str, callback: Any) -> None:
    if callback is not None and not callable(callback):
        raise AzureOpenAIInvalidArgumentError(name, "must be a callable (or None)")


class MultipartUploads:
    """Multipart uploads of one connection, on its files and uploads services."""

    def __init__(self, files: Files, uploads: Uploads) -> None:
        self.files = files
        self.uploads = uploads

    def upload_multipart(
        self,
        *,
        source: Any,
        purpose: str,
        filename: str | None = None,
        mime_type: str | None = None,
        part_size: int = DEFAULT_PART_BYTES,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        progress_interval: float = 5.0,
        stop: threading.Event | None = None,
        on_upload_created: Callable[[str], None] | None = None,
        resume_from: UploadCheckpoint | dict[str, Any] | None = None,
        on_checkpoint: CheckpointListener | None = None,
        keep_on_failure: bool | KeepPolicy = False,
        on_md5: Callable[[str], None] | None = None,
        expires_after: int | None = None,
        validate: bool = False,
    ) -> Upload:
        """Upload a file of up to 9 GiB: create (or resume) an Upload, send parts in parallel, complete it.

        The md5 of the source is computed alongside and verified by the service; the source's size and
        modification time (or etag/version) are checked before completing. Memory stays flat for local
        files whatever ``part_size`` and ``max_concurrency``; other sources hold at most
        ``max_concurrency`` parts in memory.

        Resuming: ``on_checkpoint(checkpoint, part_index)`` is told of every change (created, each part
        accepted, completed); persist ``checkpoint.to_json()`` anywhere and pass it back as ``resume_from``
        to a later call, which then sends only the parts not yet accepted, or returns the completed upload's
        File if it is still there. A checkpoint that no longer fits (the source, part size, name or endpoint
        changed, or the upload expired or was cancelled) starts a new upload and cancels the old one.

        Failures cancel the upload, unless ``keep_on_failure`` (a bool, or a callable deciding per exception)
        keeps one that a later call can resume (network trouble, 5xx/429 after the retries); a set ``stop``, a
        changed source and every other error always cancel it.

        :param on_upload_created: called with the upload id once it exists (or is resumed).
        :param on_md5: called once with the content's hex md5, after the last part and before completing
            (operators put it in their lineage).
        :param expires_after: the file expires this many seconds after its creation (batch input files: 14
            to 30 days, others 1 hour to 30 days).
        :param validate: check a ``batch`` or ``fine-tune`` dataset before any request (see
            :meth:`Files.prepare_upload <airflow_provider_aoai.resources.files.Files.prepare_upload>`); its
            md5 comes from the same read, so the upload makes no md5 pass of its own.
        :raises AzureOpenAIInvalidArgumentError: bad source, purpose, part_size, ...; nothing is sent.
        :raises AzureOpenAIUploadError: the upload gave up (``.cancelled`` says whether it was cancelled).
        :raises AzureOpenAISourceChangedError: the source changed during the upload; it was cancelled.
        :raises AzureOpenAIStoppedError: ``stop`` was set; the upload was cancelled.
        """
        return self.run(
            source=source,
            purpose=purpose,
            filename=filename,
            mime_type=mime_type,
            options=MultipartOptions.checked(part_size, max_concurrency, progress_interval),
            stop=stop,
            on_upload_created=on_upload_created,
            resume_from=resume_from,
            on_checkpoint=on_checkpoint,
            keep_on_failure=keep_on_failure,
            on_md5=on_md5,
            expires_after=expires_after,
            validate=validate,
        )

    def run(
        self,
        *,
        source: Any,
        purpose: str,
        filename: str | None,
        mime_type: str | None,
        options: MultipartOptions,
        stop: threading.Event | None = None,
        on_upload_created: Callable[[str], None] | None = None,
        resume_from: UploadCheckpoint | dict[str, Any] | None = None,
        on_checkpoint: CheckpointListener | None = None,
        keep_on_failure: bool | KeepPolicy = False,
        on_md5: Callable[[str], None] | None = None,
        expires_after: int | None = None,
        validate: bool = False,
    ) -> Upload:
        """:meth:`upload_multipart` with its options already checked (an operator checks them at parse)."""
        self.uploads.require("upload_multipart", self.uploads.surface.supports_uploads)
        check_stop(stop)
        for name, callback in (
            ("on_upload_created", on_upload_created),
            ("on_checkpoint", on_checkpoint),
            ("on_md5", on_md5),
        ):
            _check_callback(name, callback)
        if mime_type is not None:
            check_text(mime_type, "mime_type", max_chars=255)
        if resume_from is not None:  # always a copy: the caller's checkpoint is never changed
            try:
                resume_from = UploadCheckpoint.from_json(
                    resume_from.to_json() if isinstance(resume_from, UploadCheckpoint) else resume_from
                )
            except ValueError as exc:
                raise AzureOpenAIInvalidArgumentError("resume_from", str(exc)) from None
        if not (isinstance(keep_on_failure, bool) or callable(keep_on_failure)):
            raise AzureOpenAIInvalidArgumentError("keep_on_failure", "must be a bool or a callable")
        request = self.files.prepare_upload(
            source=source,
            purpose=purpose,
            filename=filename,
            expires_after=expires_after,
            validate=validate,
            operation="create_upload",
        )
        opened, name = request.source, request.filename
        check_part_count(options.part_size, opened.size)
        mime_type = mime_type or ("text/jsonl" if name.endswith(".jsonl") else "application/octet-stream")
        log = self.uploads.log
        log.info(
            "Multipart upload of %s: %d bytes in parts of %d, %d in parallel",
            opened.description,
            opened.size,
            options.part_size,
            options.max_concurrency,
        )
        return ResumableUpload(
            self.files,
            self.uploads,
            request=request,
            mime_type=mime_type,
            part_size=options.part_size,
            max_concurrency=options.max_concurrency,
            progress=Progress(total=opened.size, interval=float(options.progress_interval), logger=log),
            stop=stop,
            resume_from=resume_from,
            on_checkpoint=on_checkpoint,
            keep_on_failure=keep_on_failure,
            on_upload_created=on_upload_created,
            on_md5=on_md5,
        ).run()
