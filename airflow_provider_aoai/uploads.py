"""The upload engine: opening sources, checking them before any request, and sending parts in parallel.

A *source* is a local path, a ``file://`` / fsspec URL or an Airflow ``ObjectStoragePath``, or a seekable
binary file object. :func:`send_parts` reads the source once, sequentially, updating the md5 as it goes, and
hands each part to a thread pool; a semaphore keeps at most ``max_concurrency`` parts in memory, so memory
stays near ``max_concurrency x part_size`` whatever the file size. Nothing here speaks HTTP.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from airflow_provider_aoai.exceptions import AzureOpenAIInvalidArgumentError, AzureOpenAIUploadError
from airflow_provider_aoai.models import (
    JSONL_PURPOSES,
    MAX_PART_BYTES,
    MAX_PARTS,
    MIN_PART_BYTES,
    MiB,
)

log = logging.getLogger(__name__)

SNIFF_BYTES = 1 * MiB


@dataclass
class Source:
    """An opened-for-reading description of what to upload."""

    name: str
    size: int
    opener: Callable[[], IO[bytes]]
    description: str

    def open(self) -> IO[bytes]:
        return self.opener()


class _Borrowed(io.RawIOBase):
    """Reads a caller's file object from a fixed offset without closing it."""

    def __init__(self, stream: IO[bytes], offset: int) -> None:
        self._stream = stream
        stream.seek(offset)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self._stream.read(size)

    def close(self) -> None:  # the caller owns the stream
        pass


def open_source(source: Any, argument: str = "source") -> Source:
    """Describe ``source`` and check that it exists and is readable; no request is sent.

    :raises AzureOpenAIInvalidArgumentError: missing file, a directory, or a non-seekable stream.
    """
    if hasattr(source, "read"):
        if not (hasattr(source, "seekable") and source.seekable()):
            raise AzureOpenAIInvalidArgumentError(
                argument, "a file object must be seekable (its size is needed)"
            )
        offset = source.tell()
        size = source.seek(0, os.SEEK_END) - offset
        source.seek(offset)
        name = os.path.basename(str(getattr(source, "name", "") or "")) or "upload.bin"
        return Source(name, size, lambda: _Borrowed(source, offset), f"file object {name}")

    text = os.fspath(source) if isinstance(source, (str, os.PathLike)) and not hasattr(source, "fs") else None
    if text is not None and text.startswith("file://"):
        text = text[len("file://") :]
    if text is not None and "://" not in text:
        path = Path(text).expanduser()
        if not path.exists():
            raise AzureOpenAIInvalidArgumentError(argument, f"{path} does not exist")
        if not path.is_file():
            raise AzureOpenAIInvalidArgumentError(argument, f"{path} is not a regular file")
        return Source(path.name, path.stat().st_size, lambda: path.open("rb"), str(path))

    # fsspec URLs and ObjectStoragePath (a universal_pathlib path with .fs and .path).
    if hasattr(source, "fs") and hasattr(source, "path"):
        fs, fs_path, description = source.fs, source.path, str(source)
    else:
        import fsspec

        try:
            fs, fs_path = fsspec.core.url_to_fs(str(source))
        except (ImportError, ValueError) as exc:
            raise AzureOpenAIInvalidArgumentError(argument, f"cannot open {source!s}: {exc}") from None
        description = str(source)
    try:
        info = fs.info(fs_path)
    except FileNotFoundError:
        raise AzureOpenAIInvalidArgumentError(argument, f"{description} does not exist") from None
    if info.get("type") != "file":
        raise AzureOpenAIInvalidArgumentError(argument, f"{description} is not a file")
    name = fs_path.rstrip("/").rsplit("/", 1)[-1]
    return Source(name, int(info["size"]), lambda: fs.open(fs_path, "rb"), description)


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


def check_part_size(part_size: int, total: int, argument: str = "part_size") -> int:
    """Validate ``part_size`` for a file of ``total`` bytes; return the number of parts.

    :raises AzureOpenAIInvalidArgumentError: outside [1 MiB, 512 MiB] or more than 50,000 parts.
    """
    if isinstance(part_size, bool) or not isinstance(part_size, int):
        raise AzureOpenAIInvalidArgumentError(argument, "must be an integer number of bytes")
    if not MIN_PART_BYTES <= part_size <= MAX_PART_BYTES:
        raise AzureOpenAIInvalidArgumentError(
            argument, f"{part_size} is outside the allowed range [{MIN_PART_BYTES}, {MAX_PART_BYTES}] bytes"
        )
    parts = max(1, -(-total // part_size))
    if parts > MAX_PARTS:
        raise AzureOpenAIInvalidArgumentError(
            argument,
            f"{part_size} would split {total} bytes into {parts} parts; the service takes {MAX_PARTS}",
        )
    return parts


@dataclass
class Progress:
    """Bytes sent so far, shared by the upload threads; logs at most every ``interval`` seconds."""

    total: int
    interval: float = 5.0
    logger: logging.Logger = log
    sent: int = 0
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
        percent = 100.0 * self.sent / self.total if self.total else 100.0
        eta = (self.total - self.sent) / rate if rate > 0 else float("inf")
        eta_text = f"{eta:.0f}s" if eta != float("inf") else "unknown"
        return (
            f"Uploaded {self.sent / MiB:.1f} of {self.total / MiB:.1f} MiB ({percent:.1f}%) "
            f"at {rate / 1e6:.1f} MB/s, ETA {eta_text}"
        )


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


def send_parts(
    *,
    source: Source,
    part_size: int,
    max_concurrency: int,
    send_part: Callable[[bytes], str],
    stop: threading.Event | None = None,
) -> tuple[list[str], str]:
    """Read ``source`` once and send it part by part, in parallel; return (part ids in order, md5 hex).

    ``send_part(data)`` uploads one part (retrying transient failures itself) and returns its id.
    The first part that fails for good stops the reading and is re-raised once in-flight parts finish.

    :raises AzureOpenAIUploadError: ``stop`` was set (the task is being killed), or the source changed size.
    """
    parts = max(1, -(-source.size // part_size))
    digest = hashlib.md5(usedforsecurity=False)
    slots = threading.BoundedSemaphore(max_concurrency)
    failed = threading.Event()
    futures: list[Future[str]] = []

    def release(future: Future[str]) -> None:
        if future.cancelled() or future.exception() is not None:
            failed.set()  # before the slot is freed, so no further part is read after a failure
        slots.release()

    with source.open() as stream, ThreadPoolExecutor(max_concurrency, thread_name_prefix="aoai-part") as pool:
        for index in range(parts):
            slots.acquire()
            if failed.is_set() or (stop is not None and stop.is_set()):
                slots.release()
                break
            expected = min(part_size, source.size - index * part_size)
            data = _read_exactly(stream, expected)
            if len(data) != expected:
                slots.release()
                for future in futures:
                    future.cancel()
                raise AzureOpenAIUploadError(
                    f"{source.description} ended early (part {index + 1}: {len(data)} of {expected} bytes); "
                    "was it changed during the upload?"
                )
            digest.update(data)
            future = pool.submit(send_part, data)
            del data  # the worker holds the only reference; it is freed as soon as the part is sent
            future.add_done_callback(release)
            futures.append(future)
        wait(futures, return_when=FIRST_EXCEPTION)
        for future in futures:
            if future.done() and not future.cancelled() and future.exception() is not None:
                for other in futures:
                    other.cancel()
                raise future.exception()  # type: ignore[misc]
    if stop is not None and stop.is_set():
        raise AzureOpenAIUploadError("the upload was stopped (task killed)")
    if len(futures) != parts:  # pragma: no cover - only reachable through a failure raised above
        raise AzureOpenAIUploadError("not every part was sent")
    return [future.result() for future in futures], digest.hexdigest()
