"""Parts in parallel: send the parts of a source not yet accepted, and compute its md5 on the way.

* **local files** (the usual case) stream every part from its own offset, so memory stays flat whatever the
  part size and concurrency, and a retried part is simply read again; the md5 is computed by a separate
  sequential pass that overlaps with sending (``hashlib`` releases the GIL). Because the md5 and the parts
  are read independently, a file rewritten in between cannot pass the service's md5 check either.
* **other sources** (remote fsspec files, file objects) are read once, sequentially, into part buffers; at
  most ``max_concurrency`` buffers exist at once, so memory stays near ``max_concurrency x part_size``.

A resumed upload passes the parts already accepted: they are read again only for the md5. Parts go out on a
:class:`~concurrent.futures.ThreadPoolExecutor`. Nothing here speaks HTTP: ``send_part`` does.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from airflow_provider_aoai.exceptions import (
    AzureOpenAIInvalidArgumentError,
    AzureOpenAISourceChangedError,
    AzureOpenAIStoppedError,
)
from airflow_provider_aoai.http.forms import PartContent
from airflow_provider_aoai.models import MAX_PARTS, MiB
from airflow_provider_aoai.options import check_part_range
from airflow_provider_aoai.redaction import redact

if TYPE_CHECKING:
    from airflow_provider_aoai.sources import Source

log = logging.getLogger(__name__)

HASH_CHUNK = 4 * MiB

# send_part(index, size, content) uploads one part (retrying transient failures itself); returns its id.
SendPart = Callable[[int, int, PartContent], str]


def check_part_size(part_size: Any, total: int, argument: str = "part_size") -> int:
    """Validate ``part_size`` for a file of ``total`` bytes; return the number of parts.

    :raises AzureOpenAIInvalidArgumentError: outside [1 MiB, 512 MiB] or more than 50,000 parts.
    """
    return check_part_count(check_part_range(part_size, argument), total, argument)


def check_part_count(part_size: int, total: int, argument: str = "part_size") -> int:
    """The number of parts of ``total`` bytes in parts of ``part_size`` (already in range).

    :raises AzureOpenAIInvalidArgumentError: more parts than the service takes (50,000).
    """
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


class _Sender:
    """Sends parts on a thread pool; the first failure halts the rest (parts in flight finish)."""

    def __init__(
        self, size: int, send_part: SendPart, on_accepted: Callable[[int, str], None] | None
    ) -> None:
        self._send_part = send_part
        self._on_accepted = on_accepted
        self._executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="aoai-part")
        self._futures: list[Future[None]] = []
        self._lock = threading.Lock()
        self.halted = threading.Event()
        self.errors: list[BaseException] = []
        self.accepted: dict[int, str] = {}

    def submit(self, index: int, size: int, content: PartContent, slot: threading.Semaphore | None) -> None:
        self._futures.append(self._executor.submit(self._send, index, size, content, slot))

    def _send(self, index: int, size: int, content: PartContent, slot: threading.Semaphore | None) -> None:
        try:
            if self.halted.is_set():
                return
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
            if slot is not None:
                slot.release()

    def wait_idle(self, stop: threading.Event | None, poll: float = 0.05) -> None:
        """Wait until every part submitted has been sent (or given up), or ``stop`` is set."""
        pending = set(self._futures)
        while pending and not _stopped(stop):
            pending = wait(pending, timeout=poll).not_done

    def close(self) -> None:
        """Halt: parts not yet started never start; parts in flight finish on their own."""
        self.halted.set()
        self._executor.shutdown(wait=False, cancel_futures=True)


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
    md5: str | None = None,
) -> PartsResult:
    """Send every part of ``source`` not in ``accepted``, in parallel; return the part ids and the md5.

    ``md5``: the content's, when a check already read the source whole (a local file then needs no md5 pass;
    the service still verifies it against the parts it got). ``on_accepted(index, part_id)`` is called as
    each part is accepted (from a sending thread). The first
    part that fails for good halts the others; parts already in flight finish (so a later try can resume
    from them), then the first failure is raised. A set ``stop`` returns at once, without waiting for the
    parts in flight (the caller aborts their sockets).

    :raises AzureOpenAISourceChangedError: the source grew, shrank or changed while it was read.
    :raises AzureOpenAIStoppedError: ``stop`` was set.
    """
    accepted = dict(accepted or {})
    count = part_count(source.size, part_size)
    missing = [index for index in range(count) if index not in accepted]
    sender = _Sender(max(1, min(max_concurrency, len(missing) or 1)), send_part, on_accepted)
    try:
        if source.local_path is not None and md5 is not None:
            _Pacer(missing, part_size, source.size, sender, source).release_all()
        elif source.local_path is not None:
            md5 = _send_streamed(source, part_size, missing, sender, stop)
        else:
            md5 = _send_buffered(source, part_size, count, set(missing), sender, max_concurrency, stop)
        sender.wait_idle(stop)
    except (OSError, ValueError) as exc:  # the sequential read failed: deleted, closed, unreadable
        raise AzureOpenAISourceChangedError(
            f"source changed during upload: {source.description} can no longer be read "
            f"({type(exc).__name__}: {redact(exc, limit=200)})"
        ) from None
    finally:
        sender.close()
    if _stopped(stop):
        raise AzureOpenAIStoppedError("the upload was stopped (the task is being killed)")
    if sender.errors:
        raise sender.errors[0]
    part_ids = {**accepted, **sender.accepted}
    return PartsResult([part_ids[index] for index in range(count)], md5, len(missing))


def _part_range(index: int, part_size: int, total: int) -> tuple[int, int]:
    offset = index * part_size
    return offset, min(part_size, total - offset)


class _Pacer:
    """Keeps the sending of a local file's parts from running far ahead of the md5 pass.

    The md5 pass is one core's work that cannot be split, and an upload ends only when it does. When the
    network is faster than md5 (a fast link, loopback), parts sent all at once early on take the CPU from
    it and then leave a core idle (docs/performance.md, "Uploads", has the measurement). So a part starts
    only while the parts started so far hold at most one part more than the pass has hashed. As soon as
    sending is seen to lag hashing (a slow link: the parts in flight have read less than the pass), every
    part may start.
    """

    def __init__(
        self, missing: list[int], part_size: int, total: int, sender: _Sender, source: Source
    ) -> None:
        self.pending = collections.deque(missing)
        self.part_size = part_size
        self.total = total
        self.sender = sender
        self.source = source
        self.lead = part_size
        self.started = 0  # bytes of the parts handed to the sender
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
            self.sender.submit(index, size, functools.partial(self._content, offset, size), None)
            self.started += size

    def release_all(self) -> None:
        self.open = True
        self.release(self.total)


def _send_streamed(
    source: Source, part_size: int, missing: list[int], sender: _Sender, stop: threading.Event | None
) -> str:
    pacer = _Pacer(missing, part_size, source.size, sender, source)
    pacer.release(0)
    # The md5 pass runs here while the sender sends: one sequential read, overlapping with the network.
    digest = hashlib.md5(usedforsecurity=False)
    buffer = bytearray(HASH_CHUNK)
    view = memoryview(buffer)
    remaining = source.size
    with source.open() as stream:
        while remaining > 0:
            if _stopped(stop) or sender.halted.is_set():
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
    sender: _Sender,
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
                    if _stopped(stop) or sender.halted.is_set():
                        return ""
            if _stopped(stop) or sender.halted.is_set():
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
                sender.submit(index, expected, functools.partial(iter, (data,)), slots)
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
