"""Scripted faults and a simulated WAN link for the emulator.

Tests and benchmarks script the next N calls of an operation (``files.create``, ``uploads.parts``, ... or
``*`` for any, optionally only at paths containing a substring) to answer an error status with
``Retry-After``/``retry-after-ms``, to drop the connection mid-request, or to answer slowly; with
``after=True`` the request is served first and only its answer is lost. They also cap each connection's
bandwidth and add latency. The plan keeps a log of the requests served, so tests can count attempts instead
of guessing.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from typing import Any

MAX_DELAY_SECONDS = 3600.0
MAX_LATENCY_SECONDS = 60.0

OPERATIONS = (
    "files.create",
    "files.import",
    "files.list",
    "files.get",
    "files.delete",
    "files.content",
    "uploads.create",
    "uploads.parts",
    "uploads.complete",
    "uploads.cancel",
)


@dataclass
class Fault:
    """What the next ``count`` calls of ``operation`` get instead of a normal answer.

    :param operation: an operation name (see :data:`OPERATIONS`) or ``*`` for any.
    :param count: how many matching calls the fault applies to.
    :param status: answer this status, with the surface's error body.
    :param drop: abort the TCP connection instead of answering.
    :param delay_seconds: wait this long before handling the request.
    :param retry_after: ``Retry-After`` header of the answer (seconds or an HTTP date).
    :param retry_after_ms: ``retry-after-ms`` header of the answer.
    :param after: handle the request normally first (the store changes: a file is created, an upload
        completed), then answer ``status`` or drop the connection instead of the real answer: the service
        acted, but its answer was lost.
    :param path_contains: apply only to calls whose raw path (as sent, percent-encoded) contains this.
    """

    operation: str
    count: int = 1
    status: int | None = None
    drop: bool = False
    delay_seconds: float = 0.0
    retry_after: str | None = None
    retry_after_ms: int | None = None
    after: bool = False
    path_contains: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.operation, str) or (
            self.operation != "*" and self.operation not in OPERATIONS
        ):
            raise ValueError(f"unknown operation {self.operation!r}; expected '*' or one of {OPERATIONS}")
        if not _is_int(self.count) or self.count < 1:
            raise ValueError("count must be an integer of at least 1")
        if self.status is not None and (not _is_int(self.status) or not 400 <= self.status <= 599):
            raise ValueError("status must be an HTTP error status (400-599)")
        for name in ("drop", "after"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be true or false")
        if (
            isinstance(self.delay_seconds, bool)
            or not isinstance(self.delay_seconds, (int, float))
            or not 0 <= self.delay_seconds <= MAX_DELAY_SECONDS
        ):
            raise ValueError(f"delay_seconds must be a number from 0 to {MAX_DELAY_SECONDS}")
        if _is_int(self.retry_after):
            self.retry_after = str(self.retry_after)
        if self.retry_after is not None and (
            not isinstance(self.retry_after, str)
            or not 0 < len(self.retry_after) <= 64
            or not all(" " <= char <= "~" for char in self.retry_after)
        ):
            raise ValueError("retry_after must be a header value: 1-64 printable ASCII characters")
        if self.retry_after_ms is not None and (not _is_int(self.retry_after_ms) or self.retry_after_ms < 0):
            raise ValueError("retry_after_ms must be a non-negative integer")
        if self.path_contains is not None and (
            not isinstance(self.path_contains, str) or not self.path_contains
        ):
            raise ValueError("path_contains must be a non-empty string")
        if self.status is None and not self.drop and self.delay_seconds <= 0:
            raise ValueError("a fault needs a status, drop=True or delay_seconds > 0")
        if self.after and self.status is None and not self.drop:
            raise ValueError("after=True needs a status or drop=True to replace the real answer with")

    def applies_to(self, operation: str, path: str) -> bool:
        return self.operation in ("*", operation) and (
            self.path_contains is None or self.path_contains in path
        )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class Link:
    """A simulated WAN link: per-connection bandwidth cap (bytes/s, request bodies) and added latency."""

    bandwidth_bytes_per_second: float | None = None
    latency_seconds: float = 0.0


@dataclass
class RequestRecord:
    """One request served: ``path`` is the raw path as sent (percent-encoded), ``params`` its decoded ids;
    ``throttled``: answered 429 by the rate limits (see :mod:`.throttle`), not by a scripted fault."""

    method: str
    path: str
    operation: str | None
    params: dict[str, str] = field(default_factory=dict)
    status: int | None = None
    fault: str | None = None
    throttled: bool = False


@dataclass
class FaultPlan:
    """Thread-safe: the test thread scripts it while the server thread consumes it."""

    faults: list[Fault] = field(default_factory=list)
    link: Link = field(default_factory=Link)
    requests: list[RequestRecord] = field(default_factory=list)
    in_flight: dict[str, int] = field(default_factory=dict)
    peak_in_flight: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def inject(self, operation: str, **kwargs: Any) -> Fault:
        """Script a fault; see :class:`Fault` for the keyword arguments."""
        fault = Fault(operation=operation, **kwargs)
        with self._lock:
            self.faults.append(fault)
        return fault

    def set_link(self, bandwidth_bytes_per_second: float | None = None, latency_seconds: float = 0.0) -> None:
        """Cap each connection's request bodies at ``bandwidth_bytes_per_second`` (``None``: no cap) and add
        ``latency_seconds`` before each request is handled."""
        if bandwidth_bytes_per_second is not None and (
            isinstance(bandwidth_bytes_per_second, bool)
            or not isinstance(bandwidth_bytes_per_second, (int, float))
            or not 0 < bandwidth_bytes_per_second < float("inf")
        ):
            raise ValueError("bandwidth_bytes_per_second must be a positive number or null")
        if (
            isinstance(latency_seconds, bool)
            or not isinstance(latency_seconds, (int, float))
            or not 0 <= latency_seconds <= MAX_LATENCY_SECONDS
        ):
            raise ValueError(f"latency_seconds must be a number from 0 to {MAX_LATENCY_SECONDS}")
        with self._lock:
            self.link = Link(bandwidth_bytes_per_second, latency_seconds)

    def clear(self) -> None:
        """Forget faults, the link settings and the request log."""
        with self._lock:
            self.faults.clear()
            self.link = Link()
            self.requests.clear()
            self.peak_in_flight.clear()

    def take(self, operation: str | None, path: str = "") -> Fault | None:
        """The fault that applies to this call of ``operation`` at the raw ``path``, consuming one of its
        ``count``."""
        if operation is None:
            return None
        with self._lock:
            for fault in self.faults:
                if fault.applies_to(operation, path):
                    fault.count -= 1
                    if fault.count == 0:
                        self.faults.remove(fault)
                    return fault
        return None

    def record(self, entry: RequestRecord) -> None:
        with self._lock:
            self.requests.append(entry)

    def enter(self, operation: str | None) -> None:
        """Count a request of ``operation`` as being served (for the peak-concurrency figures)."""
        with self._lock:
            count = self.in_flight.get(operation or "", 0) + 1
            self.in_flight[operation or ""] = count
            self.peak_in_flight[operation or ""] = max(count, self.peak_in_flight.get(operation or "", 0))

    def leave(self, operation: str | None) -> None:
        with self._lock:
            self.in_flight[operation or ""] -= 1

    def calls(self, operation: str) -> list[RequestRecord]:
        """Requests served for ``operation`` so far, faulted ones included."""
        with self._lock:
            return [r for r in self.requests if r.operation == operation]

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "faults": [asdict(f) for f in self.faults],
                "link": asdict(self.link),
                "requests": [asdict(r) for r in self.requests],
            }
