"""One HTTP client per connection id, shared by every trigger of a process (the triggerer).

A triggerer runs hundreds of waits in one event loop. If each built its own hook, each would keep its own
socket open and fetch its own Entra ID token. Here they share one
:class:`~airflow_provider_aoai.client.AzureOpenAIClient` per connection id, with its session pool and token
cache (both thread-safe). The connection is read again at most every ``recheck_seconds``. If its fields
changed (their fingerprint differs), the next call gets a new client and the old one is closed; requests
still running on it finish first.

Everything that blocks (reading the connection, importing the HTTP stack on first use, the requests) runs in
a small thread pool of its own through :func:`run_blocking`, never on the event loop; the pool's size bounds
the sockets open at once. Waking threads costs more CPU than a poll itself, so waits sleep until a tick
shared by the process (:func:`sleep_on_tick`) and the calls made together share a few thread hops. This
module imports nothing heavy; the hook is imported in a worker thread.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import hashlib
import json
import logging
import math
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from airflow_provider_aoai.hooks import AzureOpenAIHook

log = logging.getLogger(__name__)

# How often a shared client's connection is read again to notice a change (seconds).
DEFAULT_RECHECK_SECONDS = 30.0
# Threads that run the triggers' blocking calls; at most this many requests (and sockets) at once.
BLOCKING_THREADS = 8
# Waits wake on a shared tick of this many seconds (at most a tenth of their interval), so that their
# polls share wake-ups and thread hops.
TICK_SECONDS = 1.0
# The blocking calls made in one turn of the event loop are shared by as many threads as it takes to run
# them in about BATCH_TARGET_SECONDS, judging by how long calls took so far: one thread for a fast service
# (with the GIL, more would only cost CPU), up to BLOCKING_THREADS for a slow one. Results go back to the
# loop at least every HAND_BACK_SECONDS.
BATCH_TARGET_SECONDS = 0.25
HAND_BACK_SECONDS = 0.05

T = TypeVar("T")


def connection_fingerprint(conn: Any) -> str:
    """A digest of every field of an Airflow connection that the client is built from (no secret is kept)."""
    fields = [
        getattr(conn, name, None) for name in ("conn_type", "host", "schema", "login", "password", "port")
    ]
    extra = getattr(conn, "extra", None)
    fields.append(extra if isinstance(extra, (str, type(None))) else json.dumps(extra, sort_keys=True))
    return hashlib.sha256(json.dumps(fields, default=str).encode()).hexdigest()


@dataclass
class _Entry:
    fingerprint: str
    hook: AzureOpenAIHook
    checked_at: float


class SharedClients:
    """Hooks on shared clients, one per connection id; thread-safe. Call :meth:`hook` from a worker thread.

    :param recheck_seconds: read a connection again at most this often to notice a change.
    """

    def __init__(self, recheck_seconds: float = DEFAULT_RECHECK_SECONDS) -> None:
        self.recheck_seconds = recheck_seconds
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._building: dict[str, threading.Lock] = {}

    def hook(self, conn_id: str) -> AzureOpenAIHook:
        """The hook of ``conn_id``, on the process's client for it (built, or rebuilt, when needed).

        Blocking: it may read the connection and build a client.

        :raises AzureOpenAIConfigError: the connection is unusable (the message names the field).
        """
        with self._lock:
            entry = self._entries.get(conn_id)
            building = self._building.setdefault(conn_id, threading.Lock())
        if entry is not None and time.monotonic() - entry.checked_at < self.recheck_seconds:
            return entry.hook
        if entry is not None and not building.acquire(blocking=False):
            return entry.hook  # another thread is reading the connection again; this one goes on
        if entry is None:
            building.acquire()  # the first calls wait for the one client all of them will use
        try:
            return self._refresh(conn_id)
        finally:
            building.release()

    def _refresh(self, conn_id: str) -> AzureOpenAIHook:
        from airflow_provider_aoai.connection import build_client
        from airflow_provider_aoai.hooks import AzureOpenAIHook

        entry = self._entries.get(conn_id)
        if entry is not None and time.monotonic() - entry.checked_at < self.recheck_seconds:
            return entry.hook  # refreshed by another thread while this one waited
        conn = AzureOpenAIHook.get_connection(conn_id)
        fingerprint = connection_fingerprint(conn)
        if entry is not None and entry.fingerprint == fingerprint:
            entry.checked_at = time.monotonic()
            return entry.hook
        hook = AzureOpenAIHook.from_client(build_client(conn, conn_id), conn_id)
        with self._lock:
            self._entries[conn_id] = _Entry(fingerprint, hook, time.monotonic())
        if entry is not None:
            log.info("Connection %s changed; the triggers now use a new client for it", conn_id)
            entry.hook.client.close()  # requests in flight on it finish; none starts there again
        return hook

    def clear(self) -> None:
        """Close and forget every shared client."""
        with self._lock:
            entries = list(self._entries.values())
            self._entries.clear()
        for entry in entries:
            entry.hook.client.close()


shared_clients = SharedClients()

_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _blocking_executor() -> ThreadPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=BLOCKING_THREADS, thread_name_prefix="aoai-trigger")
        return _executor


Call = tuple[Callable[[], Any], "asyncio.Future[Any]"]
Outcome = tuple["asyncio.Future[Any]", Any, "BaseException | None"]


class _Batches:
    """The blocking calls made in one turn of an event loop, run back to back by worker threads, their
    results handed back to the loop in groups.

    Waking a thread, and then the loop again, costs more CPU than a status request itself (about 0.6 ms
    against 0.3 ms on a 2-core VM). A thousand waits polling every 10 s make 100 calls a second; with
    :func:`sleep_on_tick` they come in one group a second, which takes one or two hops when the service
    answers fast, and more threads (up to ``BLOCKING_THREADS``) when it answers slowly.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pending: list[Call] = []
        self.flush_at: asyncio.Handle | None = None
        self.call_seconds = 0.05  # a running mean of how long one call takes; pessimistic at first

    def submit(self, call: Callable[[], T]) -> asyncio.Future[T]:
        future: asyncio.Future[T] = self.loop.create_future()
        self.pending.append((call, future))
        if self.flush_at is None:
            self.flush_at = self.loop.call_soon(self.flush)  # after every call of this turn
        return future

    def flush(self) -> None:
        batch, self.pending, self.flush_at = self.pending, [], None
        calls = collections.deque(batch)
        threads = math.ceil(len(batch) * self.call_seconds / BATCH_TARGET_SECONDS)
        executor = _blocking_executor()
        for _ in range(max(1, min(BLOCKING_THREADS, threads))):
            executor.submit(self._drain, calls)

    def _drain(self, calls: collections.deque[Call]) -> None:
        outcomes: list[Outcome] = []
        handed_back = time.monotonic()
        while True:
            try:
                call, future = calls.popleft()
            except IndexError:
                break
            if future.cancelled():
                continue
            started = time.monotonic()
            try:
                outcomes.append((future, call(), None))
            except BaseException as exc:
                outcomes.append((future, None, exc))
            now = time.monotonic()
            self.call_seconds += (now - started - self.call_seconds) / 8
            if now - handed_back >= HAND_BACK_SECONDS:
                self._hand_back(outcomes)
                outcomes, handed_back = [], now
        if outcomes:
            self._hand_back(outcomes)

    def _hand_back(self, outcomes: list[Outcome]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits for these any more
            self.loop.call_soon_threadsafe(self._deliver, outcomes)

    @staticmethod
    def _deliver(outcomes: list[Outcome]) -> None:
        for future, value, error in outcomes:
            if future.done():
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(value)


_batches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Batches] = weakref.WeakKeyDictionary()


async def run_blocking(function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run ``function(*args, **kwargs)`` in the shared worker threads and await its result (calls made in
    the same turn of the loop share a thread hop, see :class:`_Batches`)."""
    loop = asyncio.get_running_loop()
    batches = _batches.get(loop)
    if batches is None:
        batches = _batches[loop] = _Batches(loop)
    return await batches.submit(functools.partial(function, *args, **kwargs))


async def sleep_on_tick(seconds: float) -> None:
    """Sleep at least ``seconds`` and at most a tenth longer, waking on a tick shared by all the waits of
    the process (a multiple of ``min(TICK_SECONDS, seconds / 10)`` of the loop's clock), so that waits due
    at about the same time wake, and poll, together."""
    loop = asyncio.get_running_loop()
    tick = min(TICK_SECONDS, seconds / 10)
    wake = loop.time() + seconds
    await asyncio.sleep(wake + (-wake % tick if tick > 0 else 0) - loop.time())
