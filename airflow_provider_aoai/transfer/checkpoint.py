"""What a later try needs to resume a multipart upload: an :class:`UploadCheckpoint`, plain JSON."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_aoai.models import MAX_PART_BYTES, MIN_PART_BYTES, File, Upload, is_usable_id
from airflow_provider_aoai.sources import Fingerprint
from airflow_provider_aoai.transfer.parts import part_count

if TYPE_CHECKING:
    from airflow_provider_aoai.resources.files import UploadRequest

CHECKPOINT_VERSION = 1
# A pending upload this close to its expiry is not resumed: the missing parts might not make it in time.
EXPIRY_MARGIN_SECONDS = 5 * 60


@dataclass
class UploadCheckpoint:
    """What a later try needs to resume a multipart upload: JSON-able, written as the upload progresses.

    :param parts: index (0-based) -> id of every part the service accepted.
    :param file_id: set once the upload is completed.
    :param expires_at: the upload's expiry (UNIX time) as the service announced it, if it did.
    :param file_expires_after: the ``expires_after`` the upload was created with (its file's), if any.
    """

    upload_id: str
    endpoint: str
    filename: str
    purpose: str
    part_size: int
    fingerprint: Fingerprint
    created_at: int
    expires_at: int | None = None
    parts: dict[int, str] = field(default_factory=dict)
    file_id: str | None = None
    file_expires_after: int | None = None

    @property
    def total_bytes(self) -> int:
        return self.fingerprint.size

    def why_not_resume(self, endpoint: str, request: UploadRequest, part_size: int) -> str | None:
        """Why this checkpoint cannot resume an upload of ``request`` to ``endpoint``; ``None`` if it can."""
        if self.endpoint != endpoint:
            return "the connection now points at another endpoint"
        if (self.filename, self.purpose) != (request.filename, request.purpose):
            return "the filename or purpose changed"
        if self.file_expires_after != request.expires_after:
            return "expires_after changed"
        if self.part_size != part_size:
            return f"the part size changed ({self.part_size} -> {part_size} bytes)"
        if self.fingerprint != request.source.fingerprint:
            change = self.fingerprint.describe_change(request.source.fingerprint)
            return f"the source changed since the upload started: {change}"
        expiring = self.expires_at is not None and self.expires_at - time.time() < EXPIRY_MARGIN_SECONDS
        if self.file_id is None and expiring:
            return "the upload has expired (or is about to)"
        return None

    def as_upload(self, file: File | None = None) -> Upload:
        """The Upload this checkpoint records: ``completed`` with its ``file``, else ``pending``."""
        upload: Upload = {
            "object": "upload",
            "id": self.upload_id,
            "bytes": self.total_bytes,
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "completed" if file is not None else "pending",
        }
        if self.expires_at is not None:
            upload["expires_at"] = self.expires_at
        if file is not None:
            upload["file"] = file
        return upload

    def header_json(self) -> dict[str, Any]:
        """Everything but the parts (which a store may keep in pages of their own)."""
        return {
            "version": CHECKPOINT_VERSION,
            "upload_id": self.upload_id,
            "endpoint": self.endpoint,
            "filename": self.filename,
            "purpose": self.purpose,
            "part_size": self.part_size,
            "fingerprint": self.fingerprint.to_json(),
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "file_id": self.file_id,
            "file_expires_after": self.file_expires_after,
        }

    def to_json(self) -> dict[str, Any]:
        return {**self.header_json(), "parts": {str(index): pid for index, pid in sorted(self.parts.items())}}

    @classmethod
    def from_json(cls, data: Any) -> UploadCheckpoint:
        """:raises ValueError: not a checkpoint this version can read."""
        if not isinstance(data, dict) or data.get("version") != CHECKPOINT_VERSION:
            raise ValueError("not a checkpoint of this version")
        if not isinstance(data.get("parts") or {}, dict):
            raise ValueError("malformed checkpoint: parts must map part indexes to part ids")
        try:
            parts = {int(index): str(pid) for index, pid in (data.get("parts") or {}).items()}
            checkpoint = cls(
                upload_id=str(data["upload_id"]),
                endpoint=str(data["endpoint"]),
                filename=str(data["filename"]),
                purpose=str(data["purpose"]),
                part_size=int(data["part_size"]),
                fingerprint=Fingerprint.from_json(data["fingerprint"]),
                created_at=int(data["created_at"]),
                expires_at=int(data["expires_at"]) if data.get("expires_at") is not None else None,
                parts=parts,
                file_id=str(data["file_id"]) if data.get("file_id") else None,
                file_expires_after=int(data["file_expires_after"])
                if data.get("file_expires_after") is not None
                else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed checkpoint: {exc}") from None
        if not MIN_PART_BYTES <= checkpoint.part_size <= MAX_PART_BYTES or checkpoint.total_bytes < 0:
            raise ValueError("malformed checkpoint: part_size or size out of range")
        if any(
            not is_usable_id(v) for v in (checkpoint.upload_id, *parts.values(), checkpoint.file_id or "x")
        ):
            raise ValueError("malformed checkpoint: an unusable id")
        count = part_count(checkpoint.total_bytes, checkpoint.part_size)
        if any(not 0 <= index < count for index in parts):
            raise ValueError("malformed checkpoint: a part index out of range")
        return checkpoint
