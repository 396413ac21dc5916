"""Uploads: the service's multipart Upload objects, one request each (create, add a part, complete, cancel).

Sending a whole file this way, in parallel and resumably, is :mod:`~airflow_provider_aoai.transfer`'s job.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from airflow_provider_aoai.exceptions import (
    AzureOpenAIConflictError,
    AzureOpenAIError,
    AzureOpenAIInvalidArgumentError,
    AzureOpenAIResponseError,
    AzureOpenAIUploadError,
)
from airflow_provider_aoai.http.forms import MultipartBody, PartContent
from airflow_provider_aoai.http.policy import Retry
from airflow_provider_aoai.models import MAX_PART_BYTES, MAX_UPLOAD_BYTES, ObjectKind, Upload, UploadPart
from airflow_provider_aoai.resources.base import Resource, as_upload
from airflow_provider_aoai.validation import (
    check_filename,
    check_id,
    check_ids,
    check_int,
    check_stop,
    check_text,
)

if TYPE_CHECKING:
    from airflow_provider_aoai.http.client import AzureOpenAIClient
    from airflow_provider_aoai.resources.files import Files

_MD5_DIGITS = frozenset("0123456789abcdefABCDEF")


class Uploads(Resource):
    """The Uploads API of one connection (data plane and v1; Foundry projects do not offer it).

    :param files: the same connection's files, where a completed upload's File is looked for.
    """

    def __init__(
        self, client: AzureOpenAIClient, files: Files, *, conn_id: str | None = None, log: Any = None
    ) -> None:
        super().__init__(client, conn_id=conn_id, log=log)
        self.files = files

    def create_upload(
        self,
        *,
        filename: str,
        purpose: str,
        total_bytes: int,
        mime_type: str,
        stop: threading.Event | None = None,
        expires_after: int | None = None,
    ) -> Upload:
        """Start a multipart Upload of ``total_bytes`` (at most 9 GiB); returns the Upload (``pending``).

        :param expires_after: its file expires this many seconds after creation (see ``upload_file``).
        """
        self.require("create_upload", self.surface.supports_uploads)
        check_filename(filename)
        self.check_purpose(purpose, "create_upload")
        check_text(mime_type, "mime_type", max_chars=255)
        check_int(total_bytes, "total_bytes", minimum=1, maximum=MAX_UPLOAD_BYTES)
        document: dict[str, Any] = {
            "filename": filename,
            "purpose": purpose,
            "bytes": total_bytes,
            "mime_type": mime_type,
        }
        seconds = self.check_expiry(expires_after, purpose)
        if seconds is not None:
            document["expires_after"] = {"anchor": "created_at", "seconds": seconds}
        upload = self.client.request_object(
            "POST",
            ("uploads",),
            expect=ObjectKind.UPLOAD,
            retry=Retry.CREATE,
            json=document,
            stop=check_stop(stop),
        )
        return as_upload(upload)

    def add_upload_part(
        self,
        *,
        upload_id: str,
        data: bytes | bytearray | memoryview | None = None,
        content: PartContent | None = None,
        size: int | None = None,
        on_bytes: Callable[[int], None] | None = None,
        stop: threading.Event | None = None,
    ) -> UploadPart:
        """Add one part to an Upload; retried on transient failures (a stray duplicate part is never listed).

        Give the part as ``data``, or as ``content`` (a callable returning a fresh iterator of exactly
        ``size`` bytes for every attempt, so a part streams from its source and is re-read on a retry).
        """
        self.require("add_upload_part", self.surface.supports_uploads)
        check_id(upload_id, "upload_id")
        check_stop(stop)
        if on_bytes is not None and not callable(on_bytes):
            raise AzureOpenAIInvalidArgumentError("on_bytes", "must be a callable (or None)")
        if data is not None:
            if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) == 0:
                raise AzureOpenAIInvalidArgumentError("data", "must be non-empty bytes")
            view = memoryview(data)
            size = check_int(view.nbytes, "data", minimum=1, maximum=MAX_PART_BYTES)

            def content() -> Any:
                for start in range(0, len(view), 1024 * 1024):
                    yield view[start : start + 1024 * 1024]

        elif content is None or not callable(content):
            raise AzureOpenAIInvalidArgumentError(
                "data", "give the part's bytes as data, or content and size"
            )
        else:
            check_int(size, "size", minimum=1, maximum=MAX_PART_BYTES)
        body = MultipartBody(
            fields={},
            file_field="data",
            filename="blob",
            size=cast(int, size),
            content=content,
            on_bytes=on_bytes,
            stop=stop,
        )
        part = self.client.request_object(
            "POST",
            ("uploads", upload_id, "parts"),
            expect=ObjectKind.PART,
            expect_parent=upload_id,
            body=body,
            stop=stop,
        )
        return cast(UploadPart, part)

    def complete_upload(
        self,
        *,
        upload_id: str,
        part_ids: list[str],
        md5: str | None = None,
        upload: Upload | None = None,
        stop: threading.Event | None = None,
    ) -> Upload:
        """Complete an Upload with its parts in order; returns the Upload with its nested File.

        ``complete`` is retried on transient failures (5xx, dropped connection, timeout): an upload completes
        at most once, so a repeat cannot make a second file. When the service answers 409 because an earlier
        attempt did complete it, the File is looked up by the upload's filename, purpose and size among the
        files created since the upload was, and adopted only if its content has ``md5`` (the service offers
        no lookup by upload id); pass the ``upload`` as created (or as a checkpoint describes it) to allow
        that lookup.

        :raises AzureOpenAIConflictError: the upload is not pending (cancelled, expired, or completed with no
            file to be found).
        :raises AzureOpenAIUploadError: it may have been completed, but which file it made cannot be told.
        """
        self.require("complete_upload", self.surface.supports_uploads)
        check_id(upload_id, "upload_id")
        body: dict[str, Any] = {"part_ids": check_ids(part_ids, "part_ids")}
        if md5 is not None:
            if not isinstance(md5, str) or len(md5) != 32 or any(c not in _MD5_DIGITS for c in md5):
                raise AzureOpenAIInvalidArgumentError(
                    "md5", "must be the 32-character hex md5 digest of the file"
                )
            body["md5"] = md5.lower()
        try:
            completed = self.client.request_object(
                "POST",
                ("uploads", upload_id, "complete"),
                expect=ObjectKind.UPLOAD,
                expect_id=upload_id,
                json=body,
                stop=check_stop(stop),
            )
        except AzureOpenAIConflictError:
            found = self._completed_earlier(upload, md5) if upload is not None else None
            if found is None:
                raise
            return found
        if completed.get("status") != "completed":
            raise AzureOpenAIResponseError(
                200,
                "unexpectedResponse",
                f"complete of upload {upload_id} answered status {completed.get('status')!r}",
            )
        return as_upload(completed)

    def _completed_earlier(self, upload: Upload, md5: str | None) -> Upload | None:
        """The completed Upload with its File, if an earlier attempt completed ``upload``; else ``None``.

        The candidates are the files named like the upload, with its purpose and size, created since the
        upload was (both times on the service's clock); the one whose content has the upload's ``md5`` is
        its File. Without an md5, or when no candidate's content can be read, nothing is adopted.

        :raises AzureOpenAIUploadError: a candidate could not be checked, or several have the same content.
        """
        candidates = self.files.find_files(
            filename=upload["filename"],
            purpose=upload["purpose"],
            created_after=float(upload.get("created_at") or 0),
            size=upload.get("bytes"),
            clock_skew=0,
        )
        if not candidates or md5 is None:
            return None
        match = self.files.match_content(candidates, md5)
        if match.file is not None:
            self.log.info("Upload %s was already completed as file %s", upload["id"], match.file.get("id"))
            completed: Upload = {**upload, "status": "completed", "file": match.file}
            return completed
        if match.matching or match.unreadable:
            ids = ", ".join(str(f.get("id")) for f in (match.matching or candidates)[:10])
            why = "have its content" if match.matching else "could not be read to compare their md5"
            raise AzureOpenAIUploadError(
                f"Upload {upload['id']} may have been completed, but "
                f"{len(match.matching or match.unreadable)} file(s) ({ids}) {why}; cannot tell which one it "
                "produced",
                upload_id=upload["id"],
                cancelled=False,
            )
        return None

    def cancel_upload(self, *, upload_id: str) -> Upload:
        """Cancel an Upload; its parts are discarded. Cancelling a cancelled upload is harmless."""
        self.require("cancel_upload", self.surface.supports_uploads)
        check_id(upload_id, "upload_id")
        upload = self.client.request_object(
            "POST", ("uploads", upload_id, "cancel"), expect=ObjectKind.UPLOAD, expect_id=upload_id
        )
        return as_upload(upload)

    def cancel_upload_quietly(self, upload_id: str) -> bool:
        """Cancel an upload, logging instead of raising when that fails (cleanup paths); True if cancelled."""
        try:
            self.cancel_upload(upload_id=upload_id)
        except AzureOpenAIError as exc:
            self.log.warning("Could not cancel upload %r: %s", upload_id, exc)  # %r: maybe not an id
            return False
        self.log.warning("Upload %s cancelled", upload_id)
        return True
