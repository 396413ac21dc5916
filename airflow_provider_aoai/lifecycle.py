"""What a task remembers across its tries, so a retry or a clear never redoes finished work.

On Airflow 3.3 and later the operators keep a little state in the task instance's ``task_state_store`` (one
namespace per DAG run, task and map index, shared by every try of it and kept across a clear):

* the import and upload-file operators record the *inputs* they were given (a digest, never the URL or any
  secret), the time just before they asked the service to create the file, and the file id as soon as the
  service answers. A later try with the same inputs re-attaches to that file if it still exists and is not
  ``error`` or ``deleted``; if the earlier try died between asking and hearing the answer, the file is looked
  up by name, purpose and size among the files created since;
* the multipart operator records its :class:`~airflow_provider_aoai.transfer.checkpoint.UploadCheckpoint`:
  the upload id, part size, source fingerprint and the part ids as they are accepted (in pages of 256, so no
  single value grows large), and the file id once completed.

Without a ``task_state_store`` (Airflow 2.11 and 3.0-3.2) nothing is remembered: one log line says so and
every try starts over, as before.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from airflow_provider_aoai.exceptions import AzureOpenAINotFoundError
from airflow_provider_aoai.models import File, FileOutcome, file_outcome
from airflow_provider_aoai.transfer.checkpoint import UploadCheckpoint

if TYPE_CHECKING:
    from airflow_provider_aoai.resources.files import Files

FILE_KEY = "aoai.file"
UPLOAD_KEY = "aoai.upload"
PARTS_KEY = "aoai.upload.parts.{page}"
PARTS_PER_PAGE = 256


def task_state_store(context: Mapping[str, Any] | None, log: Any) -> Any | None:
    """The context's ``task_state_store``, or ``None`` (logged once) where this Airflow has none."""
    store = context.get("task_state_store") if isinstance(context, Mapping) else None
    if store is None:
        log.info(
            "Resume and re-attach are unavailable: this Airflow has no task_state_store (Airflow 3.3+), "
            "so a retry of this task starts over."
        )
    return store


def is_last_try(context: Mapping[str, Any] | None, retries: int | None) -> bool:
    """True when a failure of this try will not be retried by Airflow (no retries left)."""
    ti = context.get("ti") if isinstance(context, Mapping) else None
    try_number = getattr(ti, "try_number", None)
    max_tries = getattr(ti, "max_tries", None)
    if not isinstance(try_number, int) or not isinstance(max_tries, int):
        return True  # unknown: behave as if no retry will come (cancel, do not keep)
    return not (retries and try_number <= max_tries)


def inputs_digest(**inputs: Any) -> str:
    """A digest of what a task was asked to do: equal digests mean "the same inputs" (no secret is kept)."""
    text = json.dumps(inputs, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class FileMemory:
    """The import / upload-file operators' record: inputs digest, when the create was asked, the file id."""

    def __init__(self, store: Any, log: Any) -> None:
        self.store = store
        self.log = log

    def forget(self) -> None:
        self.store.delete(FILE_KEY)

    def reattach(
        self,
        files: Files,
        inputs: str,
        *,
        filename: str,
        purpose: str,
        size: int | None,
        content_md5: Callable[[], str] | None = None,
    ) -> File | None:
        """The file an earlier try created for the same ``inputs``, if it is still usable; else ``None``.

        :param content_md5: the md5 of what this task uploads. When an earlier try asked for the file but
            died before the answer, a file is adopted only if its content has this md5 (a file of the same
            name and size may be another task's); without it (imports), nothing is adopted.
        """
        record = self.store.get(FILE_KEY)
        if not isinstance(record, dict) or record.get("inputs") != inputs:
            return None
        file_id = record.get("file_id")
        if isinstance(file_id, str) and file_id:
            try:
                file = files.get_file(file_id=file_id)
            except AzureOpenAINotFoundError:
                self.log.warning("File %s from an earlier try no longer exists; creating a new one", file_id)
                return None
            if file_outcome(file, files.surface) is FileOutcome.FAILED:
                self.log.warning(
                    "File %s from an earlier try is %s; creating a new one", file_id, file.get("status")
                )
                return None
            self.log.info("Re-attaching to file %s, created by an earlier try with the same inputs", file_id)
            return file
        asked_at = record.get("asked_at")
        if not isinstance(asked_at, (int, float)):
            return None
        # The earlier try died between asking and hearing the answer: did the service create the file?
        found = files.find_files(filename=filename, purpose=purpose, created_after=asked_at, size=size)
        if not found:
            return None
        mine = files.match_content(found, content_md5()).file if content_md5 is not None else None
        if mine is not None:
            self.log.info(
                "Re-attaching to file %s: an earlier try asked for it but did not live to see the answer "
                "(same name, size and content)",
                mine.get("id"),
            )
            self.created(str(mine["id"]), inputs)
            return mine
        self.log.warning(
            "An earlier try asked for %s but did not live to see the answer; it cannot be told whether %s is "
            "that file, so a new one is created (delete the other if it is a duplicate)",
            filename,
            ", ".join(str(f.get("id")) for f in found[:10]),
        )
        return None

    def asking(self, inputs: str) -> None:
        """Record, before the create request, that this try is asking for a file with ``inputs``."""
        self.store.set(FILE_KEY, {"inputs": inputs, "asked_at": time.time(), "file_id": None})

    def created(self, file_id: str, inputs: str) -> None:
        """Record the file id the service answered (as soon as it answered)."""
        record = self.store.get(FILE_KEY)
        asked_at = record.get("asked_at") if isinstance(record, dict) else None
        self.store.set(FILE_KEY, {"inputs": inputs, "asked_at": asked_at, "file_id": file_id})


class UploadMemory:
    """The multipart operator's record: an :class:`UploadCheckpoint`, parts kept in pages of their own."""

    def __init__(self, store: Any, log: Any) -> None:
        self.store = store
        self.log = log
        self._lock = threading.Lock()
        self._pages: dict[int, dict[str, str]] = {}
        self._upload_id: str | None = None

    def load(self) -> UploadCheckpoint | None:
        header = self.store.get(UPLOAD_KEY)
        if not isinstance(header, dict):
            return None
        parts: dict[str, str] = {}
        page = 0
        while True:
            stored = self.store.get(PARTS_KEY.format(page=page))
            if not isinstance(stored, dict) or stored.get("upload_id") != header.get("upload_id"):
                break
            parts.update(stored.get("parts") or {})
            page += 1
        try:
            checkpoint = UploadCheckpoint.from_json({**header, "parts": parts})
        except ValueError as exc:
            self.log.warning("Ignoring the recorded upload: %s", exc)
            return None
        self._adopt(checkpoint)
        return checkpoint

    def _adopt(self, checkpoint: UploadCheckpoint) -> None:
        self._upload_id = checkpoint.upload_id
        self._pages = {}
        for index, part_id in checkpoint.parts.items():
            self._pages.setdefault(index // PARTS_PER_PAGE, {})[str(index)] = part_id

    def save(self, checkpoint: UploadCheckpoint, index: int | None) -> None:
        """Persist what changed: the header (``index`` None), or the page of part ``index``."""
        with self._lock:
            if checkpoint.upload_id != self._upload_id:
                self._adopt(checkpoint)
            if index is None:
                self.store.set(UPLOAD_KEY, checkpoint.header_json())
                return
            number = index // PARTS_PER_PAGE
            page = self._pages.setdefault(number, {})
            page[str(index)] = checkpoint.parts[index]
            # Pages are read in order until one is missing, so write any empty page before this one.
            for earlier in range(number):
                if earlier not in self._pages:
                    self._pages[earlier] = {}
                    self.store.set(
                        PARTS_KEY.format(page=earlier), {"upload_id": checkpoint.upload_id, "parts": {}}
                    )
            self.store.set(
                PARTS_KEY.format(page=number), {"upload_id": checkpoint.upload_id, "parts": dict(page)}
            )

    def forget(self) -> None:
        self.store.delete(UPLOAD_KEY)
