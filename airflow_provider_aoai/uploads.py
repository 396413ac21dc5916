"""The upload engine: sources, their fingerprints, checkpoints, and sending parts in parallel.

A *source* is a local path, a ``file://`` / fsspec URL, an Airflow ``ObjectStoragePath``, or a seekable binary
file object. Its :class:`Fingerprint` (size plus modification time, or the object store's etag/version) is
taken when it is opened and checked again before an upload is completed: a source that changed fails the
upload with :class:`AzureOpenAISourceChangedError`; one that grew or shrank is caught while it is read, too.

:func:`send_parts` sends the parts not yet accepted and computes the md5 of the whole source:

* **local files** (the usual case) stream every part from its own offset, so memory stays flat whatever the
  part size and concurrency, and a retried part is simply read again; the md5 is computed by a separate
  sequential pass that overlaps with sending (``hashlib`` releases the GIL). Because the md5 and the parts
  are read independently, a file rewritten in between cannot pass the service's md5 check either.
* **other sources** (remote fsspec files, file objects) are read once, sequentially, into part buffers; at
  most ``max_concurrency`` buffers exist at once, so memory stays near ``max_concurrency x part_size``.

A resumed upload passes the parts already accepted: they are read again only for the md5.

:class:`UploadCheckpoint` is what a later try needs to resume an upload; the hook reports it as it changes
and takes it back. Nothing here speaks HTTP.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import io
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

from airflow_provider_aoai.exceptions import (
    AzureOpenAIInvalidArgumentError,
    AzureOpenAISourceChangedError,
    AzureOpenAIStoppedError,
)
from airflow_provider_aoai.models import (
    JSONL_PURPOSES,
    MAX_PART_BYTES,
    MAX_PARTS,
    MIN_PART_BYTES,
    MiB,
    is_usable_id,
)
from airflow_provider_aoai.redaction import redact, redact_url

log = logging.getLogger(__name__)

SNIFF_BYTES = 1 * MiB
READ_CHUNK = 1 * MiB
HASH_CHUNK = 4 * MiB
CHECKPOINT_VERSION = 1

PartContent = Callable[[], Iterator[bytes | memoryview]]
# send_part(index, size, content) uploads one part (retrying transient failures itself); returns its id.
SendPart = Callable[[int, int, PartContent], str]


@dataclass(frozen=True)
class Fingerprint:
    """What identifies a source's content without reading it: its size and a change marker.

    ``marker`` is ``mtime_ns:inode`` for local files, the etag / version id / generation / modification time
    an object store reports, or ``None`` when the source offers nothing but its size.
    """

    size: int
    marker: str | None

    def to_json(self) -> dict[str, Any]:
        return {"size": self.size, "marker": self.marker}

    @classmethod
    def from_json(cls, data: Any) -> Fingerprint:
        if not isinstance(data, dict) or not isinstance(data.get("size"), int):
            raise ValueError("not a fingerprint")
        marker = data.get("marker")
        return cls(data["size"], str(marker) if marker is not None else None)

    def describe_change(self, now: Fingerprint) -> str:
        if now.size != self.size:
            return f"its size went from {self.size} to {now.size} bytes"
        return "it was modified (modification time, etag or version changed)"


# Keys under which fsspec implementations report a content version, most specific first.
_REMOTE_MARKER_KEYS = (
    "VersionId",
    "version_id",
    "generation",
    "ETag",
    "etag",
    "md5Hash",
    "content_md5",
    "mtime",
    "LastModified",
    "last_modified",
    "updated",
    "created",
)


@dataclass
class Source:
    """An opened-for-reading description of what to upload.

    :param local_path: set for local files: parts can then be read in parallel from their offsets.
    :param current: returns the source's fingerprint now (to compare with :attr:`fingerprint`).
    """

    name: str
    size: int
    opener: Callable[[], IO[bytes]]
    description: str
    fingerprint: Fingerprint
    current: Callable[[], Fingerprint]
    local_path: Path | None = None

    def open(self) -> IO[bytes]:
        return self.opener()

    def check_unchanged(self) -> None:
        """:raises AzureOpenAISourceChangedError: the fingerprint differs from the one taken at open."""
        try:
            now = self.current()
        except (OSError, ValueError) as exc:
            raise AzureOpenAISourceChangedError(
                f"source changed during upload: {self.description} can no longer be read "
                f"({type(exc).__name__})"
            ) from None
        if now != self.fingerprint:
            raise AzureOpenAISourceChangedError(
                f"source changed during upload: {self.description}: {self.fingerprint.describe_change(now)}"
            )

    def read_range(self, offset: int, size: int) -> Iterator[bytes | memoryview]:
        """Yield exactly ``size`` bytes from ``offset`` in chunks, from a fresh reader.

        For a local file the chunks are views of one buffer that the next chunk overwrites: a consumer hands
        each on (to a socket) before it asks for the next. Reusing the buffer spares a fresh 1 MiB
        allocation, and its page faults, per chunk. When the range ends the source, the source must end
        there too.

        :raises AzureOpenAISourceChangedError: the source is shorter (or, for the last range, longer).
        """
        try:
            yield from self._read_range(offset, size)
        except (OSError, ValueError) as exc:  # deleted, unmounted, closed, permissions changed, ...
            raise AzureOpenAISourceChangedError(
                f"source changed during upload: {self.description} can no longer be read "
                f"({type(exc).__name__}: {redact(exc, limit=200)})"
            ) from None

    def _read_range(self, offset: int, size: int) -> Iterator[bytes | memoryview]:
        with self.open() as stream:
            if offset:
                stream.seek(offset)
            # Local files only: other streams (a caller's file object, fsspec files) may not implement it.
            readinto: Callable[[memoryview], int | None] | None = (
                getattr(stream, "readinto", None) if self.local_path is not None else None
            )
            view = memoryview(bytearray(min(READ_CHUNK, size))) if readinto is not None else None
            remaining = size
            while remaining > 0:
                wanted = min(READ_CHUNK, remaining)
                if readinto is not None and view is not None:
                    count = readinto(view[:wanted]) or 0
                    chunk: bytes | memoryview = view[:count]
                else:
                    chunk = stream.read(wanted)
                    count = len(chunk)
                if not count:
                    raise AzureOpenAISourceChangedError(
                        f"source changed during upload: {self.description} ended {remaining} bytes early "
                        f"(at byte {offset + size - remaining} of {self.size})"
                    )
                remaining -= count
                yield chunk
            if offset + size >= self.size and stream.read(1):
                raise AzureOpenAISourceChangedError(
                    f"source changed during upload: {self.description} grew beyond {self.size} bytes"
                )


class _Borrowed(io.RawIOBase):
    """Reads a caller's file object relative to a fixed start offset, without closing it."""

    def __init__(self, stream: IO[bytes], start: int) -> None:
        self._stream = stream
        self._start = start
        stream.seek(start)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET:
            return self._stream.seek(self._start + offset) - self._start
        return self._stream.seek(offset, whence) - self._start

    def read(self, size: int = -1) -> bytes:
        return self._stream.read(size)

    def close(self) -> None:  # the caller owns the stream
        pass


def _local_fingerprint(path: Path) -> Fingerprint:
    # ctime too: a rewrite that puts the mtime back (cp -p, touch -r, rsync -t) still changes the ctime.
    stat = path.stat()
    return Fingerprint(stat.st_size, f"{stat.st_mtime_ns}:{stat.st_ctime_ns}:{stat.st_ino}")


def _remote_fingerprint(info: dict[str, Any]) -> Fingerprint:
    marker = next((str(info[key]) for key in _REMOTE_MARKER_KEYS if info.get(key) not in (None, "")), None)
    return Fingerprint(int(info["size"]), marker)


def _local_source(path: Path, argument: str, shown: str) -> Source:
    if not path.exists():
        raise AzureOpenAIInvalidArgumentError(argument, f"{shown} does not exist")
    if not path.is_file():
        raise AzureOpenAIInvalidArgumentError(argument, f"{shown} is not a regular file")
    if not os.access(path, os.R_OK):
        raise AzureOpenAIInvalidArgumentError(argument, f"{shown} is not readable")
    fingerprint = _local_fingerprint(path)
    return Source(
        name=path.name,
        size=fingerprint.size,
        opener=lambda: path.open("rb"),
        description=shown,
        fingerprint=fingerprint,
        current=lambda: _local_fingerprint(path),
        local_path=path,
    )


def _file_object_source(source: Any, argument: str) -> Source:
    try:
        seekable = bool(source.seekable())
    except (AttributeError, ValueError, OSError):
        seekable = False
    if not seekable:
        raise AzureOpenAIInvalidArgumentError(
            argument, "a file object must be open and seekable (its size is needed)"
        )
    try:
        probe = source.read(0)  # text streams answer "" (io.StringIO, TextIOWrapper have no "b" mode)
        start = source.tell()
    except (OSError, ValueError) as exc:
        raise AzureOpenAIInvalidArgumentError(argument, f"the file object cannot be read ({exc})") from None
    if not isinstance(probe, (bytes, bytearray)):
        raise AzureOpenAIInvalidArgumentError(argument, "a file object must be opened in binary mode ('rb')")

    def current() -> Fingerprint:
        size = source.seek(0, os.SEEK_END) - start
        source.seek(start)
        try:
            mtime = os.fstat(source.fileno()).st_mtime_ns
        except (AttributeError, OSError, io.UnsupportedOperation):
            mtime = None
        return Fingerprint(size, str(mtime) if mtime is not None else None)

    fingerprint = current()
    name = os.path.basename(str(getattr(source, "name", "") or "")) or "upload.bin"
    return Source(
        name=name,
        size=fingerprint.size,
        opener=lambda: cast(IO[bytes], _Borrowed(source, start)),
        description=f"file object {name}",
        fingerprint=fingerprint,
        current=current,
    )


def open_source(source: Any, argument: str = "source") -> Source:
    """Describe ``source`` and check that it exists and is readable; no request is sent.

    :raises AzureOpenAIInvalidArgumentError: missing file, a directory, an unreadable or non-seekable source.
    """
    if source is None or isinstance(source, (bytes, bytearray, memoryview)):
        raise AzureOpenAIInvalidArgumentError(
            argument, "must be a path, a file:// or fsspec URL, an ObjectStoragePath or a binary file object"
        )
    fs_of_path = object_path_fs(source, argument)
    if fs_of_path is None and hasattr(source, "read"):
        return _file_object_source(source, argument)

    is_object_path = fs_of_path is not None
    if not is_object_path and not isinstance(source, (str, os.PathLike)):
        raise AzureOpenAIInvalidArgumentError(argument, f"unsupported source type {type(source).__name__}")
    if not is_object_path:
        text = os.fspath(source)
        if not isinstance(text, str) or not text.strip():
            raise AzureOpenAIInvalidArgumentError(argument, "must not be empty")
        if "\x00" in text:
            raise AzureOpenAIInvalidArgumentError(argument, "must not contain NUL characters")
        text = text.removeprefix("file://")
        if "://" not in text:
            try:
                path = Path(text).expanduser()
                return _local_source(path, argument, str(path))
            except (OSError, RuntimeError) as exc:  # ~unknown-user, a name too long for the file system
                raise AzureOpenAIInvalidArgumentError(
                    argument, f"{redact(text, limit=200)} cannot be used: {type(exc).__name__}: {exc}"
                ) from None

    # fsspec URLs and ObjectStoragePath (a universal_pathlib path with .fs and .path).
    shown = redact_url(str(source)) if not is_object_path else redact(str(source), limit=300)
    if is_object_path:
        fs, fs_path = fs_of_path, source.path
    else:
        import fsspec

        try:
            fs, fs_path = fsspec.core.url_to_fs(str(source))
        except Exception as exc:
            raise AzureOpenAIInvalidArgumentError(
                argument, f"cannot open {shown}: {type(exc).__name__}: {redact(exc, limit=300)}"
            ) from None
    protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    if any(p in ("file", "local") for p in protocols):
        try:
            return _local_source(Path(fs_path), argument, shown)
        except OSError as exc:
            raise AzureOpenAIInvalidArgumentError(argument, f"{shown} cannot be used: {exc}") from None

    def info() -> dict[str, Any]:
        if hasattr(fs, "invalidate_cache"):
            fs.invalidate_cache(fs_path)
        return fs.info(fs_path)

    try:
        details = info()
    except FileNotFoundError:
        raise AzureOpenAIInvalidArgumentError(argument, f"{shown} does not exist") from None
    except Exception as exc:
        raise AzureOpenAIInvalidArgumentError(
            argument, f"cannot open {shown}: {type(exc).__name__}: {redact(exc, limit=300)}"
        ) from None
    if details.get("type") != "file":
        raise AzureOpenAIInvalidArgumentError(argument, f"{shown} is not a file")
    name = fs_path.rstrip("/").rsplit("/", 1)[-1]
    fingerprint = _remote_fingerprint(details)
    return Source(
        name=name,
        size=fingerprint.size,
        opener=lambda: fs.open(fs_path, "rb"),
        description=shown,
        fingerprint=fingerprint,
        current=lambda: _remote_fingerprint(info()),
    )


def object_path_fs(value: Any, argument: str) -> Any:
    """The fsspec filesystem of an ``ObjectStoragePath``-like value, or ``None`` for anything else.

    :raises AzureOpenAIInvalidArgumentError: it is one, but its filesystem cannot be had (a scheme with no
        filesystem registered in Airflow, missing credentials, ...).
    """
    if isinstance(value, (str, bytes)) or not hasattr(type(value), "fs"):
        return None
    try:
        fs = value.fs
    except Exception as exc:
        shown, why = redact(str(value), limit=200), redact(exc, limit=200)
        raise AzureOpenAIInvalidArgumentError(
            argument, f"{shown} cannot be opened: {type(exc).__name__}: {why}"
        ) from None
    return fs if fs is not None and hasattr(value, "path") else None


def check_jsonl_start(source: Source, purpose: str, argument: str = "source") -> None:
    """For JSON Lines purposes, check that the first line is a JSON object (the service validates the rest).

    :raises AzureOpenAIInvalidArgumentError: the file does not look like JSON Lines.
    """
    if purpose not in JSONL_PURPOSES:
        return
    with source.open() as stream:
        head = stream.read(SNIFF_BYTES)
    first = head.split(b"\n", 1)[0]
    try:
        record = json.loads(first)
    except ValueError:
        record = None
    if not isinstance(record, dict):
        raise AzureOpenAIInvalidArgumentError(
            argument,
            f"{source.description} is not JSON Lines: purpose {purpose!r} needs one JSON object per line, "
            "and the first line is not one",
        )


def check_part_size(part_size: Any, total: int, argument: str = "part_size") -> int:
    """Validate ``part_size`` for a file of ``total`` bytes; return the number of parts.

    :raises AzureOpenAIInvalidArgumentError: outside [1 MiB, 512 MiB] or more than 50,000 parts.
    """
    if isinstance(part_size, bool) or not isinstance(part_size, int):
        raise AzureOpenAIInvalidArgumentError(argument, "must be an integer number of bytes")
    if not MIN_PART_BYTES <= part_size <= MAX_PART_BYTES:
        raise AzureOpenAIInvalidArgumentError(
            argument, f"{part_size} is outside the allowed range [{MIN_PART_BYTES}, {MAX_PART_BYTES}] bytes"
        )
    parts = part_count(total, part_size)
    if parts > MAX_PARTS:
        raise AzureOpenAIInvalidArgumentError(
            argument,
            f"{part_size} would split {total} bytes into {parts} parts; the service takes {MAX_PARTS}",
        )
    return parts


def part_count(total: int, part_size: int) -> int:
    return max(1, -(-total // part_size))


@dataclass
class UploadCheckpoint:
    """What a later try needs to resume a multipart upload: JSON-able, written as the upload progresses.

    :param parts: index (0-based) -> id of every part the service accepted.
    :param file_id: set once the upload is completed.
    :param expires_at: the upload's expiry (UNIX time) as the service announced it, if it did.
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

    @property
    def total_bytes(self) -> int:
        return self.fingerprint.size

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


@dataclass
class Progress:
    """Bytes sent so far, shared by the upload threads; logs at most every ``interval`` seconds."""

    total: int
    interval: float = 5.0
    logger: Any = log
    sent: int = 0
    skipped: int = 0  # bytes of parts accepted by an earlier try
    started: float = field(default_factory=time.monotonic)
    _last_log: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, count: int) -> None:
        with self._lock:
            self.sent += count
            now = time.monotonic()
            if now - self._last_log < self.interval:
                return
            self._last_log = now
        self.logger.info("%s", self.describe())

    def describe(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = self.sent / elapsed
        done = self.sent + self.skipped
        percent = 100.0 * done / self.total if self.total else 100.0
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        eta_text = f"{eta:.0f}s" if eta != float("inf") else "unknown"
        return (
            f"Uploaded {done / MiB:.1f} of {self.total / MiB:.1f} MiB ({percent:.1f}%) "
            f"at {rate / 1e6:.1f} MB/s, ETA {eta_text}"
        )


@dataclass
class PartsResult:
    """The outcome of :func:`send_parts`."""

    part_ids: list[str]
    md5: str
    sent: int  # parts sent by this call (the others were accepted before)


class _Pool:
    """Daemon threads that send parts; the first failure halts the rest (in-flight parts finish)."""

    def __init__(
        self, size: int, send_part: SendPart, on_accepted: Callable[[int, str], None] | None
    ) -> None:
        self._send_part = send_part
        self._on_accepted = on_accepted
        self._jobs: queue.Queue[tuple[int, int, PartContent, threading.Semaphore | None] | None] = (
            queue.Queue()
        )
        self._lock = threading.Lock()
        self._busy = 0
        self._idle = threading.Condition(self._lock)
        self.halted = threading.Event()
        self.errors: list[BaseException] = []
        self.accepted: dict[int, str] = {}
        self._threads = [
            threading.Thread(target=self._work, name=f"aoai-part-{n}", daemon=True) for n in range(size)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, index: int, size: int, content: PartContent, slot: threading.Semaphore | None) -> None:
        with self._lock:
            self._busy += 1
        self._jobs.put((index, size, content, slot))

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            index, size, content, slot = job
            del job  # else the finished part's buffer lives on while this thread waits for the next job
            try:
                if not self.halted.is_set():
                    part_id = self._send_part(index, size, content)
                    if self._on_accepted is not None:
                        self._on_accepted(index, part_id)
                    with self._lock:
                        self.accepted[index] = part_id
            except BaseException as exc:
                with self._lock:
                    self.errors.append(exc)
                self.halted.set()
            finally:
                del content
                if slot is not None:
                    slot.release()
                with self._lock:
                    self._busy -= 1
                    self._idle.notify_all()

    def wait_idle(self, stop: threading.Event | None, poll: float = 0.05) -> None:
        """Wait until no job is queued or running, or ``stop`` is set."""
        with self._lock:
            while self._busy:
                if stop is not None and stop.is_set():
                    return
                self._idle.wait(poll)

    def close(self) -> None:
        self.halted.set()
        for _ in self._threads:
            self._jobs.put(None)


def _stopped(stop: threading.Event | None) -> bool:
    return stop is not None and stop.is_set()


def send_parts(
    *,
    source: Source,
    part_size: int,
    max_concurrency: int,
    send_part: SendPart,
    accepted: Mapping[int, str] | None = None,
    on_accepted: Callable[[int, str], None] | None = None,
    stop: threading.Event | None = None,
) -> PartsResult:
    """Send every part of ``source`` not in ``accepted``, in parallel; return the part ids and the md5.

    ``on_accepted(index, part_id)`` is called as each part is accepted (from a sending thread). The first
    part that fails for good halts the others; parts already in flight finish (so a later try can resume
    from them), then the first failure is raised. A set ``stop`` returns at once, without waiting for the
    parts in flight (the caller aborts their sockets).

    :raises AzureOpenAISourceChangedError: the source grew, shrank or changed while it was read.
    :raises AzureOpenAIStoppedError: ``stop`` was set.
    """
    accepted = dict(accepted or {})
    count = part_count(source.size, part_size)
    missing = [index for index in range(count) if index not in accepted]
    pool = _Pool(max(1, min(max_concurrency, len(missing) or 1)), send_part, on_accepted)
    try:
        if source.local_path is not None:
            md5 = _send_streamed(source, part_size, missing, pool, stop)
        else:
            md5 = _send_buffered(source, part_size, count, set(missing), pool, max_concurrency, stop)
        pool.wait_idle(stop)
    except (OSError, ValueError) as exc:  # the sequential read failed: deleted, closed, unreadable
        raise AzureOpenAISourceChangedError(
            f"source changed during upload: {source.description} can no longer be read "
            f"({type(exc).__name__}: {redact(exc, limit=200)})"
        ) from None
    finally:
        pool.close()
    if _stopped(stop):
        raise AzureOpenAIStoppedError("the upload was stopped (the task is being killed)")
    if pool.errors:
        raise pool.errors[0]
    part_ids = {**accepted, **pool.accepted}
    return PartsResult([part_ids[index] for index in range(count)], md5, len(missing))


def _part_range(index: int, part_size: int, total: int) -> tuple[int, int]:
    offset = index * part_size
    return offset, min(part_size, total - offset)


class _Pacer:
    """Keeps the sending of a local file's parts from running far ahead of the md5 pass.

    The md5 pass is one core's work that cannot be split, and an upload ends only when it does. When the
    network is faster than md5 (a fast link, loopback), parts sent all at once early on take the CPU from
    it and then leave a core idle (measured on 2 cores: 4 parts in flight went from 380 to 460-500 MB/s,
    the md5 rate being 520). So a part starts only while the parts started so far hold at most one part
    more than the pass has hashed. As soon as sending is seen to lag hashing (a slow link: the parts in
    flight have read less than the pass), every part may start.
    """

    def __init__(self, missing: list[int], part_size: int, total: int, pool: _Pool, source: Source) -> None:
        self.pending = collections.deque(missing)
        self.part_size = part_size
        self.total = total
        self.pool = pool
        self.source = source
        self.lead = part_size
        self.started = 0  # bytes of the parts handed to the pool
        self.read_for_sending = 0  # bytes the parts have read so far (a retry counts again)
        self.lock = threading.Lock()
        self.open = False

    def _content(self, offset: int, size: int) -> Iterator[bytes | memoryview]:
        for chunk in self.source.read_range(offset, size):
            with self.lock:
                self.read_for_sending += len(chunk)
            yield chunk

    def release(self, hashed: int) -> None:
        """Start the parts that may start now that ``hashed`` bytes are hashed."""
        if not self.open and self.started > hashed and self.read_for_sending + 2 * HASH_CHUNK < hashed:
            self.open = True  # the parts in flight lag the md5 pass: sending cannot slow it
        while self.pending and (self.open or self.started <= hashed + self.lead):
            index = self.pending.popleft()
            offset, size = _part_range(index, self.part_size, self.total)
            self.pool.submit(index, size, functools.partial(self._content, offset, size), None)
            self.started += size

    def release_all(self) -> None:
        self.open = True
        self.release(self.total)


def _send_streamed(
    source: Source, part_size: int, missing: list[int], pool: _Pool, stop: threading.Event | None
) -> str:
    pacer = _Pacer(missing, part_size, source.size, pool, source)
    pacer.release(0)
    # The md5 pass runs here while the pool sends: one sequential read, overlapping with the network.
    digest = hashlib.md5(usedforsecurity=False)
    buffer = bytearray(HASH_CHUNK)
    view = memoryview(buffer)
    remaining = source.size
    with source.open() as stream:
        while remaining > 0:
            if _stopped(stop) or pool.halted.is_set():
                return ""
            read = stream.readinto(view[: min(HASH_CHUNK, remaining)])  # type: ignore[attr-defined]
            if not read:
                raise AzureOpenAISourceChangedError(
                    f"source changed during upload: {source.description} ended {remaining} bytes early"
                )
            digest.update(view[:read])
            remaining -= read
            pacer.release(source.size - remaining)
        if stream.read(1):
            raise AzureOpenAISourceChangedError(
                f"source changed during upload: {source.description} grew beyond {source.size} bytes"
            )
    pacer.release_all()
    return digest.hexdigest()


def _send_buffered(
    source: Source,
    part_size: int,
    count: int,
    missing: set[int],
    pool: _Pool,
    max_concurrency: int,
    stop: threading.Event | None,
) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    slots = threading.Semaphore(max_concurrency)
    with source.open() as stream:
        for index in range(count):
            _, expected = _part_range(index, part_size, source.size)
            if index in missing:
                while not slots.acquire(timeout=0.05):
                    if _stopped(stop) or pool.halted.is_set():
                        return ""
            if _stopped(stop) or pool.halted.is_set():
                if index in missing:
                    slots.release()
                return ""
            data = _read_exactly(stream, expected)
            if len(data) != expected:
                if index in missing:
                    slots.release()
                raise AzureOpenAISourceChangedError(
                    f"source changed during upload: {source.description} ended early "
                    f"(part {index + 1}: {len(data)} of {expected} bytes)"
                )
            digest.update(data)
            if index in missing:
                pool.submit(index, expected, functools.partial(iter, (data,)), slots)
            del data
        if stream.read(1):
            raise AzureOpenAISourceChangedError(
                f"source changed during upload: {source.description} grew beyond {source.size} bytes"
            )
    return digest.hexdigest()


def _read_exactly(stream: IO[bytes], size: int) -> bytes:
    data = stream.read(size)
    if len(data) == size or not data:
        return data
    chunks = [data]
    remaining = size - len(data)
    while remaining > 0:
        chunk = stream.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def md5_of(source: Source) -> str:
    """The md5 (hex) of a source's content, read once from the start (to recognise a file of ours)."""
    digest = hashlib.md5(usedforsecurity=False)
    for chunk in source.read_range(0, source.size):
        digest.update(chunk)
    return digest.hexdigest()


def verify_content(source: Source, md5: str) -> None:
    """Read ``source`` again: its content must still have ``md5`` (the md5 of what was sent).

    For sources that offer nothing but their size to tell a change by (in-memory file objects).

    :raises AzureOpenAISourceChangedError: the content differs (or can no longer be read).
    """
    if md5_of(source) != md5:
        raise AzureOpenAISourceChangedError(
            f"source changed during upload: {source.description} no longer holds the bytes that were sent"
        )
