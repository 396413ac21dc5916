"""The triggers' status polls, scheduled together: a shared tick per event loop, one fetch per connection.

A triggerer runs a thousand waits in one event loop, each asking for one file's status every
``poll_interval`` seconds. Asked one by one, that is a hundred requests a second, and the request is the
cost: through urllib3 (``http.client`` parses every header with the ``email`` package) one status request
takes more CPU than a whole poll of a bare aiohttp poller. So the polls are scheduled here, not by each
trigger:

* **One wake-up per poll.** :func:`poll_status` returns a future that resolves with the file's status read at
  (or just after) the poll's time, on a tick shared by the process (at most a tenth of the interval late), so
  a trigger sleeps and polls in one await, and the waits due together wake together.
* **One fetch per connection per tick.** The polls due in one tick on one connection are read together, in a
  worker thread (never on the event loop): when at least :data:`LIST_MIN_FILES` distinct files are due and one
  ``GET files`` (the list, every file's status) costs less CPU than their GETs, measured as it goes, by the
  list; otherwise by one GET each, spread over up to :data:`THREADS` threads by how long a request takes. A
  file missing from the list, or failed in it (for the whole ``status_details``), is read by a GET; a list
  that fails falls back to the GETs.
* **Only the due files are kept from the list**, as it is parsed. A whole list of a thousand files, read
  every second, is a thousand dicts alive at once each time, and Python runs a young garbage collection for
  every 700 objects allocated and still alive: those collections promote the waits' pending futures and
  coroutines to the oldest generation, and every minute and a half a full collection of all the triggerer's
  objects held the event loop for about 100 ms. Kept to the due files, a thousand waits set off as few
  collections as per-wait GETs do (``benchmarks/trigger_benchmark.py`` counts them).

Measured side by side in one run (``benchmarks/RESULTS.md``), 1,000 waits polling every 10 s against the
emulator: this design costs a fraction of the CPU of a bare aiohttp poller (one shared session, a GET per
poll); per-wait GETs through urllib3, as before this module, cost more than that poller. Every thread hop
goes through one shared :class:`~concurrent.futures.ThreadPoolExecutor`, whose size bounds the sockets.
This module imports nothing heavy; the hook is imported in a worker thread on first use.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import statistics
import threading
import time
import weakref
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from airflow_provider_aoai.exceptions import AzureOpenAIError
from airflow_provider_aoai.models import File, FileOutcome, Surface, file_outcome
from airflow_provider_aoai.shared_clients import shared_clients

# Threads that read statuses; at most this many requests (and sockets) at once.
THREADS = 8
# Waits wake on a shared tick of this many seconds (at most a tenth of their interval).
TICK_SECONDS = 1.0
# The polls of one tick on one connection are spread over as many threads as it takes to read them in
# about this long; results go back to the loop at least every HAND_BACK_SECONDS.
BATCH_TARGET_SECONDS = 0.25
HAND_BACK_SECONDS = 0.05
# Fewer distinct files than this in one tick are read one by one: their GETs cost little whatever the list.
LIST_MIN_FILES = 50
# The list is used when it costs less than the GETs it replaces, by this margin; its cost is measured again
# whenever it is used, and at least this often (seconds) while the GETs are cheaper.
LIST_MARGIN = 1.5
LIST_RECHECK_SECONDS = 300.0


class Polled(NamedTuple):
    """A poll's answer: the file as read, its connection's surface, and the loop time the poll was due."""

    file: File
    surface: Surface
    at: float


_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _threads() -> ThreadPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="aoai-trigger")
        return _executor


@dataclass
class _Costs:
    """What one connection's reads cost, measured in the worker threads (seconds)."""

    get_cpu: float = 0.001  # thread CPU of one GET (a running mean)
    get_wall: float = 0.05  # wall time of one GET (a running mean), pessimistic at first
    # Thread CPU of the last lists (the median counts: one that met a garbage collection does not decide);
    # inf after a list failed.
    lists: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=5))
    list_at: float = -math.inf  # when a list was last measured (monotonic)

    def use_list(self, files: int, now: float) -> bool:
        if files < LIST_MIN_FILES:
            return False
        if not self.lists or now - self.list_at > LIST_RECHECK_SECONDS:
            return True  # find out what it costs
        return files * self.get_cpu > LIST_MARGIN * statistics.median(self.lists)

    def got(self, cpu: float, wall: float) -> None:
        self.get_cpu += (cpu - self.get_cpu) / 8
        self.get_wall += (wall - self.get_wall) / 8

    def listed(self, cpu: float | None) -> None:
        if cpu is None or (self.lists and math.isinf(self.lists[-1])):
            self.lists.clear()
        self.lists.append(math.inf if cpu is None else cpu)
        self.list_at = time.monotonic()


@dataclass(frozen=True)
class _Poll:
    conn_id: str
    file_id: str
    at: float
    future: asyncio.Future[Polled]


Outcome = tuple["asyncio.Future[Polled]", "Polled | None", "BaseException | None"]


class _Poller:
    """The polls of one event loop: due times on a shared tick, dispatched per connection when due."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.due: dict[float, list[_Poll]] = {}
        self.timer: asyncio.TimerHandle | asyncio.Handle | None = None
        self.timer_at = math.inf
        self.costs: dict[str, _Costs] = {}
        self.lock = threading.Lock()  # costs are updated from the worker threads

    def add(self, conn_id: str, file_id: str, delay: float, since: float | None) -> asyncio.Future[Polled]:
        future: asyncio.Future[Polled] = self.loop.create_future()
        now = self.loop.time()
        at = now
        if delay > 0:
            # On the tick after ``delay`` from the previous poll's due time: the waits polled together stay
            # together (their tasks resume at slightly different times), and a wait polls at a fixed rate.
            tick = min(TICK_SECONDS, delay / 10)
            at = (now if since is None else since) + delay
            at = max(at + -at % tick, now)
        self.due.setdefault(at, []).append(_Poll(conn_id, file_id, at, future))
        if at < self.timer_at:
            if self.timer is not None:
                self.timer.cancel()
            self.timer_at = at
            self.timer = self.loop.call_at(at, self.fire) if at > now else self.loop.call_soon(self.fire)
        return future

    def fire(self) -> None:
        now = self.loop.time()
        self.timer, self.timer_at = None, math.inf
        ready: dict[str, list[_Poll]] = {}
        for at in [at for at in self.due if at <= now]:
            for poll in self.due.pop(at):
                if not poll.future.done():
                    ready.setdefault(poll.conn_id, []).append(poll)
        if self.due:
            self.timer_at = min(self.due)
            self.timer = self.loop.call_at(self.timer_at, self.fire)
        for conn_id, polls in ready.items():
            self.dispatch(conn_id, polls)

    def dispatch(self, conn_id: str, polls: list[_Poll]) -> None:
        costs = self.costs.setdefault(conn_id, _Costs())
        with self.lock:
            by_list = costs.use_list(len({poll.file_id for poll in polls}), time.monotonic())
            get_wall = costs.get_wall
        if by_list:
            _threads().submit(self.read, conn_id, polls, costs, True)
            return
        threads = max(1, min(THREADS, math.ceil(len(polls) * get_wall / BATCH_TARGET_SECONDS)))
        for n in range(threads):
            _threads().submit(self.read, conn_id, polls[n::threads], costs, False)

    # ------------------------------------------------------------------ in a worker thread
    def read(self, conn_id: str, polls: Sequence[_Poll], costs: _Costs, by_list: bool) -> None:
        outcomes: list[Outcome] = []
        handed_back = time.monotonic()
        index = 0
        try:
            hook = shared_clients.hook(conn_id)
            listed = self.list_polled(hook, costs, polls) if by_list else {}
            surface = hook.surface
            for index, poll in enumerate(polls):  # noqa: B007 - the except clause reads it
                if poll.future.cancelled():
                    continue
                file = listed.get(poll.file_id)
                if file is not None and file_outcome(file, surface) is not FileOutcome.FAILED:
                    outcomes.append((poll.future, Polled(file, surface, poll.at), None))
                    continue
                started, cpu = time.monotonic(), time.thread_time()
                try:
                    file = hook.get_file(file_id=poll.file_id)
                    outcomes.append((poll.future, Polled(file, surface, poll.at), None))
                except AzureOpenAIError as exc:
                    outcomes.append((poll.future, None, exc))
                now = time.monotonic()
                with self.lock:
                    costs.got(time.thread_time() - cpu, now - started)
                if now - handed_back >= HAND_BACK_SECONDS:
                    self.hand_back(outcomes)
                    outcomes, handed_back = [], now
        except BaseException as exc:  # an unusable connection, or a bug: no poll may wait for ever
            outcomes.extend((poll.future, None, exc) for poll in polls[index:])  # answered twice: kept once
        self.hand_back(outcomes)

    def list_polled(self, hook: Any, costs: _Costs, polls: Sequence[_Poll]) -> dict[str, File]:
        """The polls' files by id, from a list that keeps only them (see the module's docstring); empty when
        the list failed (the polls are read one by one)."""
        cpu = time.thread_time()
        try:
            files = hook.list_files(ids=list({poll.file_id for poll in polls}))
        except AzureOpenAIError:
            with self.lock:
                costs.listed(None)  # no cheaper than the GETs until measured again
            return {}
        with self.lock:
            costs.listed(time.thread_time() - cpu)
        return {str(file.get("id")): file for file in files}

    def hand_back(self, outcomes: list[Outcome]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits for these any more
            self.loop.call_soon_threadsafe(_deliver, outcomes)


def _deliver(outcomes: list[Outcome]) -> None:
    for future, status, error in outcomes:
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        elif status is not None:
            future.set_result(status)


_pollers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Poller] = weakref.WeakKeyDictionary()


async def poll_status(conn_id: str, file_id: str, delay: float = 0.0, since: float | None = None) -> Polled:
    """The file's status, read ``delay`` seconds after ``since`` (the ``at`` of the previous poll; now, if
    ``None``), on the shared tick, through the process's shared client of ``conn_id``, together with the
    polls due at the same time.

    :raises AzureOpenAIError: the connection is unusable or the service could not be asked.
    """
    loop = asyncio.get_running_loop()
    poller = _pollers.get(loop)
    if poller is None:
        poller = _pollers[loop] = _Poller(loop)
    return await poller.add(conn_id, file_id, delay, since)
