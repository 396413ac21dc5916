"""Benchmark: many deferred waits in one triggerer event loop, ours and a bare aiohttp poller side by side.

``--triggers`` waits (default 1,000, one file each, polling every ``--poll`` seconds) run in one asyncio event
loop of a child process (the triggerer), against one emulator in its own process whose files stay
``running``. As in a triggerer, where tasks defer one after another, the waits start spread over the first
poll interval. Three pollers take turns, each in a fresh child process against the same files:

* **ours**: ``AzureOpenAIFileStatusTrigger``, as shipped (:mod:`airflow_provider_aoai.polling`);
* **ours, a GET per poll**: the same, with the list-based reads switched off (``LIST_MIN_FILES`` out of
  reach), so every poll is one ``GET files/{id}`` through urllib3, as before the polls were scheduled
  together: what one request costs;
* **aiohttp**: the cheapest idiomatic async poller, the reference: one shared ``aiohttp.ClientSession``, per
  wait a ``GET`` and a JSON parse per poll, ``asyncio.sleep`` between.

After a warm-up of two poll intervals each is measured over ``--seconds``:

* CPU: the child's user + system time over the wall time, in % of one core (its threads included);
* polls: statuses the waits received per second (counted in the child), and requests per second the
  emulator answered (``files.get`` + ``files.list``);
* loop lag, over a second window of the same length: how late a 10 ms ticker on the loop wakes up (worst);
* sockets: the most TCP connections open from the child to the emulator (sampled every 0.5 s);
* garbage collections over both windows: young ones (generation 0) per minute, and the full ones (generation
  2: every object of the process, Airflow's included) with the longest. A full collection holds the event
  loop for its whole length, so it sets the worst lag of the window it falls in; Python runs one once the
  objects promoted to the oldest generation reach a quarter of it, and each young collection promotes what
  is pending then, so a poller that allocates many objects per poll brings them on.

Prints a table (or one JSON line with ``--json``).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from goals import shown

API_KEY = "benchmark-api-key-0123456789"
POLLERS = ("ours", "ours_get_per_poll", "aiohttp")


def start_emulator() -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_provider_aoai.emulator",
            "--api-key",
            API_KEY,
            "--processing-seconds",
            "0",
            "--max-creates-per-second",
            "0",  # the setup creates 1,000 files at once; the waits, reads, are never throttled
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    return process, process.stdout.readline().strip().rsplit(" ", 1)[1]


# The child: the waits of one poller, then the CPU window, then the lag window. It prints "window" when the
# CPU window starts, "end" when it ends, then one JSON line.
CHILD = r"""
import asyncio, gc, json, os, sys, time

passes = []  # (generation, seconds) of every garbage collection once the windows start
def timed(phase, info, started=[0.0]):
    if phase == "start":
        started[0] = time.perf_counter()
    elif measuring:
        passes.append((info["generation"], time.perf_counter() - started[0]))
gc.callbacks.append(timed)
measuring = False

poller, poll, seconds, file_ids = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4].split(",")
polls = 0

if poller == "aiohttp":
    import aiohttp

    connection = json.loads(os.environ["AIRFLOW_CONN_AOAI_BENCH"])

    async def wait(session, file_id):
        global polls
        url = f"{connection['host']}/openai/files/{file_id}"
        while True:
            async with session.get(
                url, params={"api-version": "2024-10-21"}, headers={"api-key": connection["password"]}
            ) as answer:
                status = json.loads(await answer.read())["status"]
            polls += 1
            if status in ("processed", "error", "deleted"):
                return status
            await asyncio.sleep(poll)

    def start():
        session = aiohttp.ClientSession()
        return session, [wait(session, f) for f in file_ids]
else:
    from airflow_provider_aoai import polling, triggers
    from airflow_provider_aoai.triggers import AzureOpenAIFileStatusTrigger

    if poller == "ours_get_per_poll":
        polling.LIST_MIN_FILES = 10**9
    shipped = triggers.poll_status

    async def counted(*args, **kwargs):
        global polls
        status = await shipped(*args, **kwargs)
        polls += 1
        return status

    triggers.poll_status = counted

    def start():
        end_time = time.time() + 3600
        return None, [
            anext(
                AzureOpenAIFileStatusTrigger(
                    file_id=f, aoai_conn_id="aoai_bench", poll_interval=poll, end_time=end_time
                ).run()
            )
            for f in file_ids
        ]

async def later(delay, wait):
    await asyncio.sleep(delay)
    return await wait

async def main():
    session, waits = start()
    tasks = [asyncio.ensure_future(later(n * poll / len(waits), w)) for n, w in enumerate(waits)]
    await asyncio.sleep(2 * poll)  # warm-up: every wait has started and polled
    print("window", flush=True)  # the CPU window: nothing but the waits runs
    global measuring
    measuring = True
    before = polls
    await asyncio.sleep(seconds)
    counted = polls - before
    print("end", flush=True)
    lags = []  # then the lag window: a 10 ms ticker (it costs CPU of its own, so not in the CPU window)
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        await asyncio.sleep(0.01)
        lags.append(time.perf_counter() - started - 0.01)
    ended = sum(task.done() for task in tasks)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if session is not None:
        await session.close()
    measuring = False
    lags.sort()
    full = [pause for generation, pause in passes if generation == 2]
    return {
        "gc_young_per_minute": sum(1 for g, _ in passes if g == 0) * 60 / (2 * seconds),
        "gc_full": len(full),
        "gc_full_ms_max": 1000 * max(full, default=0.0),
        "polls_per_second": counted / seconds,
        "lag_max_ms": 1000 * lags[-1],
        "lag_p99_ms": 1000 * lags[int(len(lags) * 0.99)],
        "ended_early": ended,
    }

print(json.dumps(asyncio.run(main())), flush=True)
"""


def prepare_files(url: str, count: int) -> list[str]:
    """``count`` files on the emulator, each kept ``running`` for every read."""
    import requests

    headers = {"api-key": API_KEY}
    file_ids = []
    with requests.Session() as session:
        for n in range(count):
            created = session.post(
                f"{url}/openai/files?api-version=2024-10-21",
                headers=headers,
                files={"file": (f"f{n}.txt", io.BytesIO(b"x"))},
                data={"purpose": "assistants"},
                timeout=10,
            )
            created.raise_for_status()
            file_id = created.json()["id"]
            session.post(
                f"{url}/_emulator/files/{file_id}/statuses",
                json={"statuses": ["running"]},
                headers=headers,
                timeout=10,
            ).raise_for_status()
            file_ids.append(file_id)
    return file_ids


def requests_answered(url: str) -> int:
    import requests

    served = requests.get(f"{url}/_emulator/faults", headers={"api-key": API_KEY}, timeout=30).json()
    return sum(1 for r in served["requests"] if r["operation"] in ("files.get", "files.list"))


def measure_one(poller: str, url: str, file_ids: list[str], poll: float, seconds: float) -> dict:
    """One poller in a child process; this process watches its CPU and sockets."""
    import psutil

    port = int(url.rsplit(":", 1)[1])
    env = {
        **os.environ,
        "AIRFLOW_CONN_AOAI_BENCH": json.dumps({"conn_type": "aoai", "host": url, "password": API_KEY}),
    }
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, poller, str(poll), str(seconds), ",".join(file_ids)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    watched = psutil.Process(child.pid)
    peak_sockets = 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal peak_sockets
        while not stop.wait(0.5):
            try:
                open_now = sum(
                    1
                    for c in watched.net_connections(kind="tcp")
                    if c.raddr and c.raddr.port == port and c.status != psutil.CONN_TIME_WAIT
                )
            except psutil.Error:
                return
            peak_sockets = max(peak_sockets, open_now)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        if child.stdout.readline().strip() != "window":
            raise SystemExit(f"the {poller} poller failed before its measuring window")
        cpu0, wall0, served0 = watched.cpu_times(), time.perf_counter(), requests_answered(url)
        child.stdout.readline()
        cpu1, wall1, served1 = watched.cpu_times(), time.perf_counter(), requests_answered(url)
        result = json.loads(child.stdout.readline())
    finally:
        stop.set()
        watcher.join()
        child.wait(timeout=60)
        child.stdout.close()
    wall = wall1 - wall0
    result.update(
        cpu_percent=100 * ((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)) / wall,
        requests_per_second=(served1 - served0) / wall,
        peak_sockets=peak_sockets,
    )
    return result


def measure(triggers: int, poll: float, seconds: float) -> dict:
    emulator, url = start_emulator()
    try:
        file_ids = prepare_files(url, triggers)
        runs = {poller: measure_one(poller, url, file_ids, poll, seconds) for poller in POLLERS}
    finally:
        emulator.terminate()
        emulator.wait(timeout=30)
        if emulator.stdout is not None:
            emulator.stdout.close()
    ours = runs["ours"]
    return {
        **ours,  # the figures of the shipped poller, as the goal table reads them
        "cpu_ratio_to_aiohttp": ours["cpu_percent"] / runs["aiohttp"]["cpu_percent"],
        "runs": runs,
        "triggers": triggers,
        "poll_seconds": poll,
        "seconds": seconds,
    }


def report(result: dict) -> None:
    runs = result["runs"]
    print()
    print(
        f"{result['triggers']:,} deferred waits in one event loop, polling every {result['poll_seconds']:g} s, "
        f"against the emulator (its own process); {result['seconds']:g} s windows, pollers measured in turn"
    )
    print(
        f"  {'poller':<22} {'CPU % of a core':>15} {'polls/s':>8} {'requests/s':>10} {'lag ms':>7} {'sockets':>7}"
        f" {'young GCs/min':>13} {'full GCs (longest ms)':>21}"
    )
    names = {"ours": "ours", "ours_get_per_poll": "ours, a GET per poll", "aiohttp": "aiohttp (reference)"}
    for poller in POLLERS:
        run = runs[poller]
        print(
            f"  {names[poller]:<22} {run['cpu_percent']:15.2f} {run['polls_per_second']:8.1f} "
            f"{run['requests_per_second']:10.1f} {run['lag_max_ms']:7.1f} {run['peak_sockets']:7d}"
            f" {run['gc_young_per_minute']:13.1f} {run['gc_full']:>13d} ({run['gc_full_ms_max']:5.1f})"
        )
    print(
        f"  ours: {shown(result['cpu_ratio_to_aiohttp'], 2, at_least=False)} x the aiohttp poller's CPU"
        f"   goal <= 0.7;  lag {shown(result['lag_max_ms'], 1, at_least=False)} ms   goal <= 50;"
        f"  {result['peak_sockets']} sockets   goal <= 16"
    )
    for poller in POLLERS:
        if runs[poller]["ended_early"]:
            print(
                f"  !! {runs[poller]['ended_early']} {poller} waits ended early (they should all still wait)"
            )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--triggers", type=int, default=1000)
    parser.add_argument("--poll", type=float, default=10.0, help="poll interval, seconds")
    parser.add_argument(
        "--seconds", type=float, default=60.0, help="measured window, after one poll interval"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--json-file", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    result = measure(args.triggers, args.poll, args.seconds)
    if args.json:
        print(json.dumps(result))
    else:
        report(result)
    if args.json_file:
        args.json_file.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
