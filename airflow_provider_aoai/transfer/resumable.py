"""A resumable multipart upload: create (or resume) an Upload, send the missing parts, complete it once.

:class:`ResumableUpload` drives one upload through the files and uploads services. It reports an
:class:`~airflow_provider_aoai.transfer.checkpoint.UploadCheckpoint` as the upload progresses (created, each
part accepted, completed) and takes one back to resume: a later try sends only the parts the service has not
accepted yet, re-reading earlier bytes only for the md5. A checkpoint that no longer fits (another source
fingerprint, part size, name or endpoint; an expired, cancelled or vanished upload) is dropped, its upload
cancelled where possible, and a new upload started, with a log line saying why.

Failure policy: by default a failed upload is cancelled. With ``keep_on_failure`` a failure the next try can
resume from (connection trouble, 5xx or 429 after the retries, a token that could not be fetched, a read
error of the source, a task timeout) leaves the upload pending for that try; a deliberate stop, a changed
source and every other error still cancel it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from airflow_provider_aoai.exceptions import (
    AzureOpenAIConflictError,
    AzureOpenAIConnectionError,
    AzureOpenAICredentialError,
    AzureOpenAIError,
    AzureOpenAINotFoundError,
    AzureOpenAIRateLimitError,
    AzureOpenAIServiceError,
    AzureOpenAISourceChangedError,
    AzureOpenAIStoppedError,
    AzureOpenAIUploadError,
)
from airflow_provider_aoai.models import FileOutcome, Upload, file_outcome
from airflow_provider_aoai.sources import verify_content
from airflow_provider_aoai.transfer.checkpoint import UploadCheckpoint
from airflow_provider_aoai.transfer.parts import Progress, part_count, send_parts

if TYPE_CHECKING:
    from airflow_provider_aoai.http.forms import PartContent
    from airflow_provider_aoai.resources.files import Files, UploadRequest
    from airflow_provider_aoai.resources.uploads import Uploads

CheckpointListener = Callable[[UploadCheckpoint, "int | None"], None]
KeepPolicy = Callable[[BaseException], bool]


def is_resumable_failure(exc: BaseException) -> bool:
    """A failure after which the same upload can go on: transient service or network trouble, a timeout."""
    if isinstance(exc, (AzureOpenAISourceChangedError, AzureOpenAIStoppedError)):
        return False
    if isinstance(
        exc,
        (
            AzureOpenAIConnectionError,
            AzureOpenAIServiceError,
            AzureOpenAIRateLimitError,
            AzureOpenAICredentialError,
            OSError,
        ),
    ):
        return True
    return type(exc).__name__ == "AirflowTaskTimeout"


class _StaleUpload(Exception):
    """The resumed upload can no longer take parts or be completed; start a new one."""


class ResumableUpload:
    """One multipart upload of ``source``; see the module docstring.

    :param resume_from: a checkpoint reported by an earlier attempt, if any.
    :param on_checkpoint: told ``(checkpoint, part index or None)`` whenever the checkpoint changes; called
        from the sending threads, one call at a time.
    :param keep_on_failure: ``True``, or a callable deciding per exception, to keep a resumable upload.
    """

    def __init__(
        self,
        files: Files,
        uploads: Uploads,
        *,
        request: UploadRequest,
        mime_type: str,
        part_size: int,
        max_concurrency: int,
        progress: Progress,
        stop: threading.Event | None,
        resume_from: UploadCheckpoint | None,
        on_checkpoint: CheckpointListener | None,
        keep_on_failure: bool | KeepPolicy,
        on_upload_created: Callable[[str], None] | None,
        on_md5: Callable[[str], None] | None = None,
    ) -> None:
        self.files = files
        self.uploads = uploads
        self.request = request
        self.source = request.source
        self.mime_type = mime_type
        self.part_size = part_size
        self.max_concurrency = max_concurrency
        self.progress = progress
        self.stop = stop
        self.resume_from = resume_from
        self.on_checkpoint = on_checkpoint
        self.keep_on_failure = keep_on_failure
        self.on_upload_created = on_upload_created
        self.on_md5 = on_md5
        self.log = uploads.log
        self._lock = threading.Lock()
        self.checkpoint: UploadCheckpoint | None = None
        self.parts_sent = 0

    # ------------------------------------------------------------------ checkpoint reporting
    def _report(self, index: int | None) -> None:
        if self.on_checkpoint is not None and self.checkpoint is not None:
            self.on_checkpoint(self.checkpoint, index)

    def _accepted(self, index: int, part_id: str) -> None:
        with self._lock:
            if self.checkpoint is None:
                return
            self.checkpoint.parts[index] = part_id
            self._report(index)

    # ------------------------------------------------------------------ resume decisions
    def _reattach_completed(self, checkpoint: UploadCheckpoint) -> Upload | None:
        """The Upload of a checkpoint that recorded its completion, if its file is still usable."""
        file_id = checkpoint.file_id
        if file_id is None:
            return None
        try:
            file = self.files.get_file(file_id=file_id)
        except AzureOpenAINotFoundError:
            self.log.warning(
                "Upload %s completed as file %s, which no longer exists; uploading again",
                checkpoint.upload_id,
                file_id,
            )
            return None
        if file_outcome(file, self.files.surface) is FileOutcome.FAILED:
            self.log.warning(
                "Upload %s completed as file %s, which is %s; uploading again",
                checkpoint.upload_id,
                file_id,
                file.get("status"),
            )
            return None
        self.log.info(
            "Upload %s already completed as file %s in an earlier try; re-attaching to it",
            checkpoint.upload_id,
            file_id,
        )
        return checkpoint.as_upload(file)

    def _start(self) -> UploadCheckpoint:
        request = self.request
        upload = self.uploads.create_upload(
            filename=request.filename,
            purpose=request.purpose,
            total_bytes=self.source.size,
            mime_type=self.mime_type,
            stop=self.stop,
            expires_after=request.expires_after,
        )
        expires_at = upload.get("expires_at")
        checkpoint = UploadCheckpoint(
            upload_id=upload["id"],
            endpoint=self.uploads.client.base_url,
            filename=request.filename,
            purpose=request.purpose,
            part_size=self.part_size,
            fingerprint=self.source.fingerprint,
            created_at=int(upload.get("created_at") or time.time()),
            expires_at=int(expires_at) if isinstance(expires_at, (int, float)) else None,
            file_expires_after=request.expires_after,
        )
        try:
            with self._lock:
                self.checkpoint = checkpoint
                self._report(None)
            if self.on_upload_created is not None:
                self.on_upload_created(checkpoint.upload_id)
        except BaseException as exc:  # e.g. the task_state_store write failed: nobody could resume it
            self.uploads.cancel_upload_quietly(checkpoint.upload_id)
            if isinstance(exc, Exception):
                raise AzureOpenAIUploadError(
                    f"Upload {checkpoint.upload_id} was cancelled: recording it failed "
                    f"({type(exc).__name__}: {exc})",
                    upload_id=checkpoint.upload_id,
                ) from exc
            raise
        return checkpoint

    # ------------------------------------------------------------------ the run
    def run(self) -> Upload:
        resumed = self.resume_from
        if resumed is not None:
            reason = resumed.why_not_resume(self.uploads.client.base_url, self.request, self.part_size)
            if reason is None and resumed.file_id is not None:
                done = self._reattach_completed(resumed)
                if done is not None:
                    with self._lock:
                        self.checkpoint = resumed
                    return done
                resumed = None
            elif reason is not None:
                self.log.warning(
                    "Not resuming upload %s: %s; starting a new upload", resumed.upload_id, reason
                )
                if resumed.file_id is None:
                    self.uploads.cancel_upload_quietly(resumed.upload_id)
                resumed = None
        if resumed is not None:
            count = part_count(resumed.total_bytes, resumed.part_size)
            self.log.info(
                "Resuming upload %s: %d of %d parts already accepted; sending the other %d",
                resumed.upload_id,
                len(resumed.parts),
                count,
                count - len(resumed.parts),
            )
            with self._lock:
                self.checkpoint = resumed
            if self.on_upload_created is not None:
                self.on_upload_created(resumed.upload_id)
            try:
                return self._send_and_complete(resumed, resuming=True)
            except _StaleUpload as stale:
                self.log.warning(
                    "Upload %s can no longer be resumed (%s); starting a new upload", resumed.upload_id, stale
                )
                self.uploads.cancel_upload_quietly(resumed.upload_id)
        checkpoint = self._start()
        try:
            return self._send_and_complete(checkpoint, resuming=False)
        except _StaleUpload as stale:  # a brand-new upload that cannot take parts: report, do not loop
            raise AzureOpenAIUploadError(
                f"Upload {checkpoint.upload_id} was refused by the service right after it was created: "
                f"{stale}",
                upload_id=checkpoint.upload_id,
            ) from stale.__cause__

    def _send_part(self, upload_id: str) -> Callable[[int, int, PartContent], str]:
        def send(index: int, size: int, content: PartContent) -> str:
            part = self.uploads.add_upload_part(
                upload_id=upload_id, content=content, size=size, on_bytes=self.progress.add, stop=self.stop
            )
            with self._lock:
                self.parts_sent += 1
            return part["id"]

        return send

    def _send_and_complete(self, checkpoint: UploadCheckpoint, *, resuming: bool) -> Upload:
        upload_id = checkpoint.upload_id
        try:
            self.progress.skipped = sum(
                min(self.part_size, checkpoint.total_bytes - index * self.part_size)
                for index in checkpoint.parts
            )
            result = send_parts(
                source=self.source,
                part_size=self.part_size,
                max_concurrency=self.max_concurrency,
                send_part=self._send_part(upload_id),
                accepted=dict(checkpoint.parts),
                on_accepted=self._accepted,
                stop=self.stop,
                md5=self.request.md5,
            )
            self.source.check_unchanged()
            if self.source.fingerprint.marker is None:  # nothing else to tell a rewrite by
                verify_content(self.source, result.md5)
            if self.on_md5 is not None:
                self.on_md5(result.md5)
            completed = self.uploads.complete_upload(
                upload_id=upload_id,
                part_ids=result.part_ids,
                md5=result.md5,
                upload=checkpoint.as_upload(),
                stop=self.stop,
            )
        except (AzureOpenAINotFoundError, AzureOpenAIConflictError) as exc:
            if resuming:
                raise _StaleUpload(f"HTTP {exc.status} {exc.code or ''}".strip()) from exc
            raise self._failed(upload_id, exc) from exc
        except BaseException as exc:
            failure = self._failed(upload_id, exc)
            if failure is exc:
                raise
            raise failure from exc
        with self._lock:
            checkpoint.file_id = completed["file"]["id"]
            self._report(None)
        self.log.info(
            "%s; upload %s completed as file %s (%d part(s) sent by this try)",
            self.progress.describe(),
            upload_id,
            checkpoint.file_id,
            self.parts_sent,
        )
        return completed

    def _keep(self, exc: BaseException) -> bool:
        if not is_resumable_failure(exc):
            return False
        policy = self.keep_on_failure
        return bool(policy(exc)) if callable(policy) else bool(policy)

    def _failed(self, upload_id: str, exc: BaseException) -> BaseException:
        """Cancel the upload unless it is kept for the next try; return the exception to raise."""
        keep = self._keep(exc)
        if keep:
            self.log.warning(
                "Upload %s failed (%s); keeping it so that the next try resumes it",
                upload_id,
                type(exc).__name__,
            )
        else:
            self.uploads.cancel_upload_quietly(upload_id)
        if isinstance(exc, AzureOpenAIUploadError):
            exc.upload_id = exc.upload_id or upload_id
            exc.cancelled = not keep
            return exc
        if isinstance(exc, AzureOpenAIError) and not isinstance(exc, AzureOpenAIStoppedError):
            outcome = "kept for the next try to resume" if keep else "cancelled"
            return AzureOpenAIUploadError(
                f"Upload {upload_id} of {self.source.description} failed and was {outcome}: {exc}",
                upload_id=upload_id,
                cancelled=not keep,
            )
        return exc
