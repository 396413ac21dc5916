"""Benchmark: many deferred waits in one triggerer event loop.

Runs ``--triggers`` AzureOpenAIFileStatusTriggers (default 1,000, one file each, polling every ``--poll``
seconds) in one asyncio event loop of a child process (the triggerer), against an emulator in its own
process whose files stay ``running``. After a warm-up of one poll interval it measures, over ``--seconds``:

* CPU: the triggerer's user + system time over the wall time, in % of one core (its threads included);
* loop lag, over a second window of the same length: how late a 10 ms ticker on the loop wakes up (the
  worst and the 99th percentile);
* sockets: the most TCP connections open from the triggerer to the emulator (sampled every 0.5 s).

Prints one JSON line (``--json``) or a short table.
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

MiB = 1024 * 1024
API_KEY = "benchmark-api-key-0123456789"


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
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    return process, process.stdout.readline().strip().rsplit(" ", 1)[1]


CHILD = r"""
import asyncio, json, sys, time
from airflow_provider_aoai.triggers import AzureOpenAIFileStatusTrigger

poll, seconds, file_ids = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3].split(",")
end_time = time.time() + 3600
waits = [
    AzureOpenAIFileStatusTrigger(file_id=f, aoai_conn_id="aoai_bench", poll_interval=poll, end_time=end_time)
    for f in file_ids
]

async def main():
    tasks = [asyncio.ensure_future(anext(w.run())) for w in waits]
    await asyncio.sleep(poll)  # warm-up: every trigger has started and polled once
    print("window", flush=True)  # the CPU window: nothing but the triggers runs
    await asyncio.sleep(seconds)
    print("end", flush=True)
    lags = []  # then the lag window: a 10 ms ticker (it costs CPU of its own, so not in the CPU window)
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        before = time.perf_counter()
        await asyncio.sleep(0.01)
        lags.append(time.perf_counter() - before - 0.01)
    done = sum(task.done() for task in tasks)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    lags.sort()
    return {"lag_max_ms": 1000 * lags[-1], "lag_p99_ms": 1000 * lags[int(len(lags) * 0.99)], "ended_early": done}

print(json.dumps(asyncio.run(main())), flush=True)
"""


def measure(triggers: int, poll: float, seconds: float) -> dict:
    """Run the triggers in a child process (the triggerer); this process watches its CPU and sockets."""
    import psutil
    import requests

    emulator, url = start_emulator()
    try:
        headers = {"api-key": API_KEY}
        file_ids = []
        with requests.Session() as session:
            for n in range(triggers):  # one file per wait, each staying running
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
        port = int(url.rsplit(":", 1)[1])
        env = {
            **os.environ,
            "AIRFLOW_CONN_AOAI_BENCH": json.dumps({"conn_type": "aoai", "host": url, "password": API_KEY}),
        }
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(poll), str(seconds), ",".join(file_ids)],
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
                raise SystemExit("the trigger process failed before its measuring window")
            cpu0, wall0 = watched.cpu_times(), time.perf_counter()
            calls0 = _polls(url)
            child.stdout.readline()
            cpu1, wall1 = watched.cpu_times(), time.perf_counter()
            calls1 = _polls(url)
            result = json.loads(child.stdout.readline())
        finally:
            stop.set()
            watcher.join()
            child.wait(timeout=60)
            child.stdout.close()
        result.update(
            cpu_percent=100 * ((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)) / (wall1 - wall0),
            cpu_user_percent=100 * (cpu1.user - cpu0.user) / (wall1 - wall0),
            peak_sockets=peak_sockets,
            polls_per_second=(calls1 - calls0) / (wall1 - wall0),
            triggers=triggers,
            poll_seconds=poll,
            seconds=seconds,
        )
        return result
    finally:
        emulator.terminate()
        emulator.wait(timeout=30)
        if emulator.stdout is not None:
            emulator.stdout.close()


def _polls(url: str) -> int:
    import requests

    calls = requests.get(f"{url}/_emulator/faults", headers={"api-key": API_KEY}, timeout=30).json()[
        "requests"
    ]
    return sum(1 for c in calls if c["operation"] == "files.get")


def report(result: dict) -> None:
    print()
    print(
        f"{result['triggers']:,} deferred waits in one event loop, polling every {result['poll_seconds']:g} s, "
        f"against the emulator (its own process); {result['seconds']:g} s windows"
    )
    print(
        f"  CPU of the triggerer      {shown(result['cpu_percent'], 1, at_least=False):>5}% of a core "
        f"(user {result['cpu_user_percent']:.1f}%)   goal <= 5%"
    )
    print(
        f"  event loop lag            {shown(result['lag_max_ms'], 1, at_least=False):>5} ms worst, "
        f"{result['lag_p99_ms']:.1f} ms 99th "
        f"percentile   goal <= 50 ms"
    )
    print(f"  open sockets (most)       {result['peak_sockets']:5d}   goal <= 16")
    print(f"  polls answered            {result['polls_per_second']:5.1f} per second")
    if result["ended_early"]:
        print(f"  !! {result['ended_early']} waits ended before the end (they should all still be waiting)")


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
