"""Scripted faults and a simulated WAN link for the emulator.

Tests and benchmarks script the next N calls of an operation (``files.create``, ``uploads.parts``, ... or
``*`` for any) to answer an error status with ``Retry-After``/``retry-after-ms``, to drop the connection
mid-request, or to answer slowly; and cap each connection's bandwidth and add latency. The plan also keeps
a log of the requests served, so tests can count attempts instead of guessing.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from typing import Any

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
    """What the next ``count`` calls of ``operation`` get instead of a normal answer."""

    operation: str
    count: int = 1
    status: int | None = None  # answer this status (with the surface's error body)
    drop: bool = False  # read part of the request, then abort the TCP connection
    delay_seconds: float = 0.0  # wait this long before handling the request normally
    retry_after: str | None = None  # Retry-After header value (seconds or HTTP date)
    retry_after_ms: int | None = None  # retry-after-ms header value

    def __post_init__(self) -> None:
        if self.operation != "*" and self.operation not in OPERATIONS:
            raise ValueError(f"unknown operation {self.operation!r}; expected '*' or one of {OPERATIONS}")
        if self.count < 1:
            raise ValueError("count must be at least 1")
        if self.status is None and not self.drop and self.delay_seconds <= 0:
            raise ValueError("a fault needs a status, drop=True or delay_seconds > 0")
        if self.status is not None and not 400 <= self.status <= 599:
            raise ValueError("status must be an HTTP error status (400-599)")


@dataclass
class Link:
    """A simulated WAN link: per-connection bandwidth cap (bytes/s, request bodies) and added latency."""

    bandwidth_bytes_per_second: float | None = None
    latency_seconds: float = 0.0


@dataclass
class RequestRecord:
    method: str
    path: str
    operation: str | None
    status: int | None = None
    fault: str | None = None


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
        with self._lock:
            self.link = Link(bandwidth_bytes_per_second, latency_seconds)

    def clear(self) -> None:
        """Forget faults, the link settings and the request log."""
        with self._lock:
            self.faults.clear()
            self.link = Link()
            self.requests.clear()
            self.peak_in_flight.clear()

    def take(self, operation: str | None) -> Fault | None:
        """The fault that applies to this call of ``operation``, consuming one of its ``count``."""
        if operation is None:
            return None
        with self._lock:
            for fault in self.faults:
                if fault.operation in ("*", operation):
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
