"""Benchmarks: multipart upload throughput and peak memory, and the DAG-parse cost of our operators.

Uploads one file (1 GiB by default) through ``AzureOpenAIHook.upload_multipart`` to an emulator process, at
concurrency 1 and 4, on loopback and on a simulated WAN link (per-connection bandwidth cap plus latency).
Every upload runs in a fresh worker process so its peak RSS is its own; the baseline is the RSS of a worker
that imports the same code and builds the hook but uploads nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import requests

MiB = 1024 * 1024
API_KEY = "benchmark-api-key-0123456789"

WORKER = r"""
import json, os, sys, time
from airflow_provider_aoai.hooks import AzureOpenAIHook
hook = AzureOpenAIHook(aoai_conn_id="aoai_default")
hook.client
if sys.argv[1] == "baseline":
    print(json.dumps({}))
    sys.exit(0)
source, concurrency, part_size = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
started = time.perf_counter()
upload = hook.upload_multipart(source=source, purpose="assistants", part_size=part_size,
                               max_concurrency=concurrency, progress_interval=3600)
seconds = time.perf_counter() - started
hook.delete_file(file_id=upload["file"]["id"])
print(json.dumps({"seconds": seconds, "bytes": upload["bytes"]}))
"""


def run_worker(env: dict[str, str], *args: str) -> tuple[dict, int]:
    """Run the worker; return its JSON output and its own peak RSS in bytes (from wait4)."""
    process = subprocess.Popen(
        [sys.executable, "-c", WORKER, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(process.pid, 0)
    out, err = process.stdout.read(), process.stderr.read()
    process.stdout.close()
    process.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"worker failed:\n{err.decode()[-3000:]}")
    return json.loads(out.decode().strip().splitlines()[-1]), usage.ru_maxrss * 1024


def make_source(path: Path, size: int) -> None:
    block = os.urandom(MiB)  # incompressible, but cheap to write
    with path.open("wb") as out:
        for _ in range(size // MiB):
            out.write(block)


def import_cost() -> tuple[float, float]:
    """Cumulative import time (ms) of our operators module, and of the Airflow SDK it builds on."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import airflow_provider_aoai.operators"],
        capture_output=True,
        text=True,
        check=True,
    )
    cumulative = {}
    for line in result.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \|\s+(\S.*)$", line)
        if match:
            cumulative[match.group(2).strip()] = int(match.group(1)) / 1000.0
    ours = cumulative.get("airflow_provider_aoai.operators", float("nan"))
    airflow = max((v for k, v in cumulative.items() if k == "airflow"), default=float("nan"))
    return ours, airflow


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--part-mib", type=int, default=64)
    parser.add_argument(
        "--wan-mbps", type=float, default=50.0, help="per-connection cap on the WAN link, MB/s"
    )
    parser.add_argument("--wan-latency-ms", type=float, default=40.0)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="aoai-bench-"))
    source = work / "dataset.bin"
    print(f"Writing a {args.size_mib} MiB source file...", flush=True)
    make_source(source, args.size_mib * MiB)

    emulator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_provider_aoai.emulator",
            "--api-key",
            API_KEY,
            "--data-dir",
            str(work / "emulator"),
            "--processing-seconds",
            "0",
            "--max-upload-bytes",
            str(max(args.size_mib * MiB, 1)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        url = emulator.stdout.readline().strip().rsplit(" ", 1)[1]
        env = {
            **os.environ,
            "AIRFLOW_CONN_AOAI_DEFAULT": json.dumps({"conn_type": "aoai", "host": url, "password": API_KEY}),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        }
        _, baseline = run_worker(env, "baseline")
        rows = []
        for link_name, link in (
            ("loopback", {}),
            (
                f"WAN {args.wan_mbps:g} MB/s/conn + {args.wan_latency_ms:g} ms",
                {
                    "bandwidth_bytes_per_second": args.wan_mbps * 1e6,
                    "latency_seconds": args.wan_latency_ms / 1000,
                },
            ),
        ):
            requests.post(
                f"{url}/_emulator/link",
                json=link or {"bandwidth_bytes_per_second": None},
                headers={"api-key": API_KEY},
                timeout=10,
            ).raise_for_status()  # the control endpoints need the key: a silent 401 would drop the WAN row
            for concurrency in (1, 4):
                result, peak = run_worker(
                    env, "upload", str(source), str(concurrency), str(args.part_mib * MiB)
                )
                rows.append(
                    (
                        link_name,
                        concurrency,
                        result["bytes"] / result["seconds"] / 1e6,
                        result["seconds"],
                        peak,
                        peak - baseline,
                    )
                )
                print(f"  done: {link_name}, concurrency {concurrency}", flush=True)
    finally:
        emulator.terminate()
        emulator.wait(timeout=30)
        emulator.stdout.close()

    print()
    print(
        f"Multipart upload of {args.size_mib} MiB in {args.part_mib} MiB parts "
        "(upload_multipart -> emulator process)"
    )
    print(f"{'link':<34} {'conc':>4} {'MB/s':>8} {'seconds':>8} {'peak RSS':>10} {'above baseline':>15}")
    for link_name, concurrency, rate, seconds, peak, extra in rows:
        print(
            f"{link_name:<34} {concurrency:>4} {rate:>8.1f} {seconds:>8.1f} "
            f"{peak / MiB:>8.0f} MiB {extra / MiB:>11.0f} MiB"
        )
    print(
        f"baseline worker RSS (imports + hook, no upload): {baseline / MiB:.0f} MiB; "
        f"bound to beat: concurrency x part size = 1 x {args.part_mib} / 4 x {args.part_mib} MiB"
    )
    ours, airflow = import_cost()
    print()
    print(
        f"DAG-parse cost: import airflow_provider_aoai.operators = {ours:.0f} ms cumulative "
        f"(of which the airflow package itself: {airflow:.0f} ms)"
    )
    source.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
