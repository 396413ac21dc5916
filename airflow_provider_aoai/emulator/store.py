"""The emulator's file store: files, uploads and parts on disk, shared by all surfaces.

Content lives under ``data_dir`` (``blobs/``, ``parts/``, ``incoming/``) and metadata as one JSON document per
object under ``meta/``, written atomically, so a store opened again on the same directory finds every file
and upload it had. Files are minted, judged and shaped as their backend does (:mod:`.backends`). Nothing
here speaks HTTP; rule violations raise :class:`StoreError`, which the app turns into each surface's own
error body.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from airflow_provider_aoai.dataset_rules import service_verdict
from airflow_provider_aoai.emulator import backends
from airflow_provider_aoai.emulator.errors import DownloadError, StoreError
from airflow_provider_aoai.emulator.quotas import Quotas
from airflow_provider_aoai.models import (
    MAX_FILE_BYTES,
    MAX_PART_BYTES,
    MAX_UPLOAD_BYTES,
    UPLOAD_EXPIRY_SECONDS,
    FileStatus,
    UploadStatus,
)
from airflow_provider_aoai.redaction import redact, redact_url

COPY_CHUNK = 1024 * 1024
_ZEROS = bytes(COPY_CHUNK)


def write_sparse(out: BinaryIO, chunk: bytes) -> None:
    """Write ``chunk`` to ``out``, or skip over it when it is all zeros, leaving a hole: a sparse upload (the
    9 GiB memory test's) then takes no disk. Call :func:`end_sparse` once the last chunk is written."""
    if len(chunk) <= COPY_CHUNK and chunk == _ZEROS[: len(chunk)]:
        out.seek(len(chunk), os.SEEK_CUR)
    else:
        out.write(chunk)


def end_sparse(out: BinaryIO) -> None:
    """Give ``out`` its full size even when it ends in a hole (skipped zeros at the end)."""
    out.truncate(out.tell())


@dataclass
class Limits:
    """Size limits, quotas and timings; tests shrink them so that limits are cheap to reach."""

    max_file_bytes: int = MAX_FILE_BYTES
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    max_part_bytes: int = MAX_PART_BYTES
    upload_expiry_seconds: float = UPLOAD_EXPIRY_SECONDS
    processing_seconds: float = 1.0
    quotas: Quotas = field(default_factory=Quotas)


@dataclass
class Download:
    """A file's content, opened, with its size and the name it was stored under."""

    stream: BinaryIO
    size: int
    filename: str


@dataclass
class _FileState:
    record: dict[str, Any]
    # Internal, persisted beside the record.
    processing_started: float
    processing_seconds: float  # fixed when the file is created, so a restart does not change it
    outcome: str | None = None  # None while the job runs; "processed" or "error" once done
    outcome_details: str | None = None
    forced: list[str] = field(default_factory=list)
    forced_details: str | None = None


class Store:
    """Thread-safe store of files, uploads and parts."""

    def __init__(self, data_dir: Path, limits: Limits, *, download: Callable[[str, Path, int], int]) -> None:
        self.data_dir = data_dir
        self.limits = limits
        self._download = download
        self._lock = threading.RLock()
        self._files: dict[str, _FileState] = {}
        self._uploads: dict[str, dict[str, Any]] = {}
        self._parts: dict[str, dict[str, Any]] = {}  # part id -> record (with internal "path", "size")
        self._jobs = ThreadPoolExecutor(max_workers=4, thread_name_prefix="aoai-emulator-job")
        for sub in ("blobs", "parts", "incoming", "meta"):
            (data_dir / sub).mkdir(parents=True, exist_ok=True)
        self._load()

    # ---------------------------------------------------------------- persistence
    def _meta_path(self, kind: str, object_id: str) -> Path:
        return self.data_dir / "meta" / f"{kind}.{object_id}.json"

    def _save(self, kind: str, object_id: str, document: dict[str, Any]) -> None:
        path = self._meta_path(kind, object_id)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(document))
        os.replace(tmp, path)

    def _save_file(self, state: _FileState) -> None:
        self._save(
            "file",
            state.record["id"],
            {
                "record": state.record,
                "processing_started": state.processing_started,
                "processing_seconds": state.processing_seconds,
                "outcome": state.outcome,
                "outcome_details": state.outcome_details,
            },
        )

    def _load(self) -> None:
        for path in sorted((self.data_dir / "meta").glob("*.json")):
            kind, object_id = path.name.split(".", 2)[:2]
            document = json.loads(path.read_text())
            if kind == "file":
                state = _FileState(
                    record=document["record"],
                    processing_started=document["processing_started"],
                    processing_seconds=document["processing_seconds"],
                    outcome=document["outcome"],
                    outcome_details=document["outcome_details"],
                )
                self._files[object_id] = state
                if state.outcome is None and state.record["status"] != FileStatus.DELETED.value:
                    self._start_validation(state)  # the job died with the previous process
            elif kind == "upload":
                self._uploads[object_id] = document
            elif kind == "part":
                self._parts[object_id] = document

    def close(self) -> None:
        self._jobs.shutdown(wait=False, cancel_futures=True)

    # ---------------------------------------------------------------- incoming bodies
    def incoming_path(self) -> Path:
        """A fresh path under the data dir for a request body being streamed in."""
        return self.data_dir / "incoming" / uuid.uuid4().hex

    # ---------------------------------------------------------------- files
    def _new_file(
        self,
        *,
        filename: str,
        purpose: str,
        size: int | None,
        status: FileStatus,
        expires_after: int | None,
        judged_now: bool = False,
    ) -> _FileState:
        """A new file's state; its quota is checked here, under the lock, before anything is stored.

        :param judged_now: its final status is known before the create answers, so it takes no processing
            time.
        """
        self.limits.quotas.check(
            [s.record for s in self._live()],
            purpose=purpose,
            size=size or 0,
            expiring=expires_after is not None,
        )
        file_id = backends.new_file_id(purpose)
        created_at = int(time.time())
        record: dict[str, Any] = {
            "object": "file",
            "id": file_id,
            "bytes": size,
            "created_at": created_at,
            "filename": filename,
            "purpose": purpose,
            "status": status.value,
        }
        if expires_after is not None:
            record["expires_at"] = created_at + expires_after
        return _FileState(
            record=record,
            processing_started=time.time(),
            processing_seconds=0.0 if judged_now else self.limits.processing_seconds,
        )

    def _blob_path(self, file_id: str) -> Path:
        return self.data_dir / "blobs" / file_id

    def create_file(
        self, *, source: Path, filename: str, purpose: str, expires_after: int | None = None
    ) -> dict[str, Any]:
        """Store an uploaded body (moved, not copied) and process it: at once for the purposes the service
        judges before it answers (:func:`.backends.judged_at_create`), else in the background."""
        judged_now = backends.judged_at_create(purpose)
        size = source.stat().st_size
        if size == 0:
            source.unlink(missing_ok=True)
            raise StoreError(400, "invalidPayload", "The file is empty.", "file")
        with self._lock:
            try:
                state = self._new_file(
                    filename=filename,
                    purpose=purpose,
                    size=size,
                    status=FileStatus.PENDING,
                    expires_after=expires_after,
                    judged_now=judged_now,
                )
            except StoreError:
                source.unlink(missing_ok=True)
                raise
            os.replace(source, self._blob_path(state.record["id"]))
            self._files[state.record["id"]] = state
            self._save_file(state)
        if judged_now:
            self._validate(state)
        else:
            self._start_validation(state)
        return self.get_file(state.record["id"])

    def import_file(self, *, content_url: str, filename: str, purpose: str) -> dict[str, Any]:
        """Create a pending file and download ``content_url`` in the background."""
        with self._lock:
            state = self._new_file(
                filename=filename, purpose=purpose, size=None, status=FileStatus.PENDING, expires_after=None
            )
            self._files[state.record["id"]] = state
            self._save_file(state)
        self._jobs.submit(self._run_import, state, content_url)
        return self.get_file(state.record["id"])

    def _run_import(self, state: _FileState, content_url: str) -> None:
        target = self._blob_path(state.record["id"])
        try:
            size = self._download(content_url, target, self.limits.max_file_bytes)
        except Exception as exc:
            target.unlink(missing_ok=True)
            # Never the raw exception text: a download error quotes the URL, SAS query included.
            cause = str(exc) if isinstance(exc, DownloadError) else type(exc).__name__
            self._finish(state, f"fileImportFailed: could not download {redact_url(content_url)}: {cause}")
            return
        with self._lock:
            state.record["bytes"] = size
        if size == 0:
            self._finish(state, "fileImportFailed: the downloaded file is empty")
            return
        self._validate(state)

    def _start_validation(self, state: _FileState) -> None:
        self._jobs.submit(self._validate, state)

    def _validate(self, state: _FileState) -> None:
        """The service's judgement of a stored file, in its words (:func:`dataset_rules.service_verdict`)."""
        path = self._blob_path(state.record["id"])
        try:
            problem = service_verdict(path, state.record["purpose"])
        except OSError as exc:
            problem = f"The file could not be read: {exc}"
        self._finish(state, problem)

    def _finish(self, state: _FileState, problem: str | None) -> None:
        with self._lock:
            state.outcome = FileStatus.ERROR.value if problem else FileStatus.PROCESSED.value
            state.outcome_details = redact(problem) if problem else None
            self._save_file(state)

    def _visible(self, state: _FileState) -> dict[str, Any]:
        """The File as a reader sees it now, in its backend's shape: the lifecycle advances with time, or
        with forced statuses."""
        record = dict(state.record)
        if record["status"] == FileStatus.DELETED.value:
            return backends.shaped(record)
        if state.forced:
            status = state.forced.pop(0) if len(state.forced) > 1 else state.forced[0]
            record["status"] = status
            if status == FileStatus.ERROR.value and state.forced_details:
                record["status_details"] = state.forced_details
            return backends.shaped(record)
        elapsed = time.time() - state.processing_started
        processing = state.processing_seconds
        if state.outcome is not None and elapsed >= processing:
            record["status"] = state.outcome
            if state.outcome_details:
                record["status_details"] = state.outcome_details
        elif elapsed >= processing / 2:
            record["status"] = FileStatus.RUNNING.value
        else:
            record["status"] = FileStatus.PENDING.value
        return backends.shaped(record)

    def _alive(self, state: _FileState) -> bool:
        """Not deleted, and not past its ``expires_at``: an expired file is deleted on the spot."""
        if state.record["status"] == FileStatus.DELETED.value:
            return False
        expires_at = state.record.get("expires_at")
        if expires_at is not None and time.time() >= expires_at:
            state.record["status"] = FileStatus.DELETED.value
            self._save_file(state)
            self._blob_path(state.record["id"]).unlink(missing_ok=True)
            return False
        return True

    def _live(self) -> list[_FileState]:
        return [s for s in self._files.values() if self._alive(s)]

    def _file_state(self, file_id: str) -> _FileState:
        state = self._files.get(file_id)
        if state is None or not self._alive(state):
            raise _no_such_file(file_id)
        return state

    def get_file(self, file_id: str) -> dict[str, Any]:
        with self._lock:
            return self._visible(self._file_state(file_id))

    def list_files(self, purpose: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            states = [s for s in self._live() if purpose is None or s.record["purpose"] == purpose]
            return [self._visible(s) for s in sorted(states, key=lambda s: s.processing_started)]

    def delete_file(self, file_id: str) -> dict[str, Any]:
        """Delete a file. Deleting a deleted one answers as its backend does (recorded): the Azure files
        backend ``deleted: false``, the assistants backend a 404."""
        with self._lock:
            state = self._files.get(file_id)
            if state is not None and not self._alive(state) and not backends.is_assistants_file(file_id):
                return {"object": "file", "deleted": False, "id": file_id}
            state = self._file_state(file_id)
            state.record["status"] = FileStatus.DELETED.value
            self._save_file(state)
        self._blob_path(file_id).unlink(missing_ok=True)
        return {"object": "file", "deleted": True, "id": file_id}

    def open_content(self, file_id: str) -> tuple[BinaryIO, int]:
        """The file's content, opened (so a concurrent delete cannot pull it away), and its size."""
        download = self.open_download(file_id)
        return download.stream, download.size

    def open_download(self, file_id: str) -> Download:
        """:meth:`open_content` with the name the file was stored under."""
        with self._lock:
            state = self._file_state(file_id)
            try:
                stream = self._blob_path(file_id).open("rb")
            except FileNotFoundError:
                # Still downloading (an import), or an import that failed: there is nothing to serve.
                raise StoreError(
                    409, "unexpectedEntityState", f"File '{file_id}' has no content.", "file_id"
                ) from None
            if state.outcome is None and state.record["bytes"] is None:
                stream.close()
                raise StoreError(409, "unexpectedEntityState", f"File '{file_id}' has no content yet.")
            filename = str(state.record["filename"])
        return Download(stream, os.fstat(stream.fileno()).st_size, filename)

    def force_statuses(self, file_id: str, statuses: list[str], status_details: str | None = None) -> None:
        """Make the next reads of ``file_id`` return ``statuses`` in order, then stay on the last one."""
        for status in statuses:
            FileStatus(status)
        with self._lock:
            state = self._file_state(file_id)
            state.forced = list(statuses)
            state.forced_details = redact(status_details) if status_details is not None else None

    def set_created_at(self, file_id: str, created_at: int) -> None:
        """Make ``file_id`` look created at ``created_at`` (UNIX time), e.g. weeks ago for retention tests;
        its ``expires_at``, if it has one, moves with it."""
        with self._lock:
            state = self._file_state(file_id)
            shift = int(created_at) - state.record["created_at"]
            state.record["created_at"] = int(created_at)
            if state.record.get("expires_at") is not None:
                state.record["expires_at"] += shift
            self._save_file(state)

    # ---------------------------------------------------------------- uploads
    def _upload(self, upload_id: str) -> dict[str, Any]:
        upload = self._uploads.get(upload_id)
        if upload is None:
            raise StoreError(
                404, "notFound", f"Upload with id '{upload_id}' could not be found.", "upload_id"
            )
        if upload["status"] == UploadStatus.PENDING.value and time.time() >= upload["_expires"]:
            upload["status"] = UploadStatus.EXPIRED.value
            self._save("upload", upload_id, upload)
            self._drop_parts(upload_id)
        return upload

    def _public_upload(self, upload: dict[str, Any]) -> dict[str, Any]:
        public = {k: v for k, v in upload.items() if not k.startswith("_")}
        file_id = upload.get("_file_id")
        if file_id is not None:
            state = self._files.get(file_id)
            public["file"] = self._visible(state) if state else None
        return public

    def create_upload(
        self, *, filename: str, purpose: str, size: int, mime_type: str, expires_after: int | None = None
    ) -> dict[str, Any]:
        if size > self.limits.max_upload_bytes:
            raise StoreError(
                400,
                "invalidPayload",
                f"bytes {size} exceeds the upload limit of {self.limits.max_upload_bytes} bytes.",
                "bytes",
            )
        now = time.time()
        upload_id = backends.new_upload_id()
        lifetime = self.limits.upload_expiry_seconds
        upload = {
            "object": "upload",
            "id": upload_id,
            "bytes": size,
            "created_at": int(now),
            # created_at + 3600 exactly, as recorded, whenever the lifetime is whole seconds
            "expires_at": int(now) + int(lifetime) if float(lifetime).is_integer() else int(now + lifetime),
            "filename": filename,
            "purpose": purpose,
            "status": UploadStatus.PENDING.value,
            "_mime_type": mime_type,
            "_expires": now + self.limits.upload_expiry_seconds,
            "_created": now,
            "_file_expires_after": expires_after,
            "_file_id": None,
            "_part_ids": [],  # every part received, in order (the control surface lists them)
        }
        with self._lock:  # the file it will make must fit the quotas now, as on the service
            self.limits.quotas.check(
                [s.record for s in self._live()],
                purpose=purpose,
                size=size,
                expiring=expires_after is not None,
            )
        (self.data_dir / "parts" / upload_id).mkdir(exist_ok=True)
        with self._lock:
            self._uploads[upload_id] = upload
            self._save("upload", upload_id, upload)
            return self._public_upload(upload)

    def _require_pending(self, upload: dict[str, Any], action: str) -> None:
        if upload["status"] != UploadStatus.PENDING.value:
            raise StoreError(
                409,
                "unexpectedEntityState",
                f"Upload '{upload['id']}' is {upload['status']}; cannot {action}.",
                "upload_id",
            )

    def check_part_allowed(self, upload_id: str) -> None:
        """Raise unless parts may be added to ``upload_id`` (checked before the body is read)."""
        with self._lock:
            self._require_pending(self._upload(upload_id), "add parts")

    def add_part(self, upload_id: str, source: Path) -> dict[str, Any]:
        size = source.stat().st_size
        if size == 0:
            source.unlink(missing_ok=True)
            raise StoreError(400, "invalidPayload", "The part is empty.", "data")
        raw_id = uuid.uuid4()
        part_id = f"uplprt-{raw_id.hex}"
        part: dict[str, Any] = {
            "object": "upload.part",
            "id": part_id,
            "upload_id": upload_id,
            "azure_block_id": base64.b64encode(raw_id.bytes).decode(),
            "created_at": int(time.time()),
            "_size": size,
        }
        with self._lock:
            upload = self._upload(upload_id)
            try:
                self._require_pending(upload, "add parts")
            except StoreError:
                source.unlink(missing_ok=True)
                raise
            os.replace(source, self.data_dir / "parts" / upload_id / part_id)
            self._parts[part_id] = part
            self._save("part", part_id, part)
            upload.setdefault("_part_ids", []).append(part_id)
            self._save("upload", upload_id, upload)
        return {k: v for k, v in part.items() if not k.startswith("_")}

    def _resolve_part(self, upload_id: str, part_id: str) -> dict[str, Any]:
        # The spec's example completes with azure_block_id values; the OpenAI SDK sends part ids.
        part = self._parts.get(part_id)
        if part is None:
            part = next(
                (
                    p
                    for p in self._parts.values()
                    if p["upload_id"] == upload_id and p["azure_block_id"] == part_id
                ),
                None,
            )
        if part is None or part["upload_id"] != upload_id:
            raise StoreError(
                400,
                "invalidPayload",
                f"Part '{part_id}' does not belong to upload '{upload_id}'.",
                "part_ids",
            )
        return part

    def complete_upload(self, upload_id: str, part_ids: list[str], md5: str | None) -> dict[str, Any]:
        with self._lock:
            upload = self._upload(upload_id)
            self._require_pending(upload, "complete it")
            parts = [self._resolve_part(upload_id, part_id) for part_id in part_ids]
            if len({p["id"] for p in parts}) != len(parts):
                raise StoreError(400, "invalidPayload", "part_ids lists a part more than once.", "part_ids")
            total = sum(p["_size"] for p in parts)
            if total != upload["bytes"]:
                raise StoreError(
                    400,
                    "invalidPayload",
                    f"The listed parts hold {total} bytes but the upload was created with "
                    f"bytes={upload['bytes']}.",
                    "part_ids",
                )
            upload["status"] = "completing"  # blocks a concurrent complete/cancel/part while we assemble
        try:
            assembled = self.incoming_path()
            digest = hashlib.md5(usedforsecurity=False)
            with assembled.open("wb") as out:
                for part in parts:
                    with (self.data_dir / "parts" / upload_id / part["id"]).open("rb") as stream:
                        while chunk := stream.read(COPY_CHUNK):
                            digest.update(chunk)
                            write_sparse(out, chunk)
                end_sparse(out)
            if md5 is not None and md5.lower() != digest.hexdigest():
                assembled.unlink(missing_ok=True)
                raise StoreError(
                    400,
                    "invalidPayload",
                    f"md5 {md5} does not match the md5 of the assembled parts ({digest.hexdigest()}).",
                    "md5",
                )
        except BaseException:
            with self._lock:
                upload["status"] = UploadStatus.PENDING.value
            raise
        try:
            file = self.create_file(
                source=assembled,
                filename=upload["filename"],
                purpose=upload["purpose"],
                expires_after=upload.get("_file_expires_after"),
            )
        except BaseException:
            with self._lock:
                upload["status"] = UploadStatus.PENDING.value
            raise
        with self._lock:
            upload["status"] = UploadStatus.COMPLETED.value
            upload["_file_id"] = file["id"]
            self._save("upload", upload_id, upload)
            self._drop_parts(upload_id)
            return self._public_upload(upload)

    def cancel_upload(self, upload_id: str) -> dict[str, Any]:
        with self._lock:
            upload = self._upload(upload_id)
            if upload["status"] != UploadStatus.CANCELLED.value:  # cancelling twice is harmless
                self._require_pending(upload, "cancel it")
                upload["status"] = UploadStatus.CANCELLED.value
                self._save("upload", upload_id, upload)
                self._drop_parts(upload_id)
            return self._public_upload(upload)

    def list_uploads(self) -> list[dict[str, Any]]:
        """Every upload, oldest first, as the control surface shows it (not an API of the service): ``id``,
        ``status``, ``bytes``, ``filename``, ``purpose``, ``created_at``, ``expires_at``, ``part_ids`` (every
        part received, in order) and ``file_id`` (the file it completed into, else ``None``)."""
        with self._lock:
            uploads = [self._upload(upload_id) for upload_id in list(self._uploads)]
            return [
                {
                    **{k: v for k, v in upload.items() if not k.startswith("_") and k != "object"},
                    "part_ids": list(upload.get("_part_ids", [])),
                    "file_id": upload.get("_file_id"),
                }
                for upload in sorted(uploads, key=lambda u: (u["created_at"], u.get("_created", 0.0)))
            ]

    def get_upload(self, upload_id: str) -> dict[str, Any]:
        """Not an API of the service; the emulator's control surface and tests use it."""
        with self._lock:
            return self._public_upload(self._upload(upload_id))

    def _drop_parts(self, upload_id: str) -> None:
        for part_id in [p for p, part in self._parts.items() if part["upload_id"] == upload_id]:
            del self._parts[part_id]
            self._meta_path("part", part_id).unlink(missing_ok=True)
        shutil.rmtree(self.data_dir / "parts" / upload_id, ignore_errors=True)


def _no_such_file(file_id: str) -> StoreError:
    """The 404 of a file that is not (or no longer) there; the assistants backend's words are recorded."""
    if backends.is_assistants_file(file_id):
        return StoreError(404, "notFound", f"No such File object: {file_id}", "id")
    return StoreError(404, "notFound", f"File with id '{file_id}' could not be found.", "file_id")
