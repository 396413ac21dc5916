"""Run every benchmark in one go and print the figures; ``--results`` rewrites ``benchmarks/RESULTS.md``.

Options: ``--big`` adds the 9 GiB upload; ``--quiet-load L`` first waits (up to 30 minutes, checking every
30 s) until the machine's 1-minute load average is below ``L``, since figures taken on a busy machine say
more about its neighbours than about this code.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

from goals import meets
from goals import shown as shown_value

HERE = Path(__file__).resolve().parent


def load() -> float:
    return os.getloadavg()[0]


def wait_for_quiet(limit: float, patience: float = 1800, every: float = 30) -> None:
    deadline = time.monotonic() + patience
    while load() >= limit and time.monotonic() < deadline:
        print(f"waiting for a quiet machine: 1-minute load {load():.2f} >= {limit}", flush=True)
        time.sleep(every)
    print(f"1-minute load {load():.2f} at the start", flush=True)


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown CPU",
    )
    memory = next(
        (
            int(line.split()[1]) // (1024 * 1024)
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        ),
        0,
    )
    return (
        f"{os.cpu_count()} cores ({model}), {memory} GiB of memory, Linux {platform.release()}, "
        f"Python {platform.python_version()}, Airflow {version('apache-airflow')}, "
        f"openai {version('openai')}, requests {version('requests')}, urllib3 {version('urllib3')}"
    )


def run(command: list[str]) -> str:
    """Run a benchmark, echoing its output as it comes; return the output."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        print(line, end="", flush=True)
        lines.append(line)
    if process.wait() != 0:
        raise SystemExit(f"{' '.join(command)} failed")
    return "".join(lines)


def import_cost() -> str:
    """The DAG-parse cost: cumulative import time of our operators module, and of Airflow within it."""
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
    airflow = cumulative.get("airflow", float("nan"))
    return (
        f"DAG-parse cost: import airflow_provider_aoai.operators = {ours:.0f} ms cumulative "
        f"(of which the airflow package itself: {airflow:.0f} ms)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--big", action="store_true", help="also upload a 9 GiB file")
    parser.add_argument("--quiet-load", type=float, help="wait until the 1-minute load is below this")
    parser.add_argument("--results", action="store_true", help="rewrite benchmarks/RESULTS.md from this run")
    args = parser.parse_args()
    if args.quiet_load is not None:
        wait_for_quiet(args.quiet_load)
    started = datetime.datetime.now(datetime.UTC)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="aoai-bench-figures-") as scratch:
        upload_json, wait_json = Path(scratch) / "uploads.json", Path(scratch) / "waits.json"
        dataset_json = Path(scratch) / "datasets.json"
        uploads = run(
            [sys.executable, str(HERE / "upload_benchmark.py"), "--json", str(upload_json)]
            + (["--big"] if args.big else [])
        )
        waits = run([sys.executable, str(HERE / "trigger_benchmark.py"), "--json-file", str(wait_json)])
        datasets = run([sys.executable, str(HERE / "dataset_benchmark.py"), "--json-file", str(dataset_json)])
        goals = goal_table(
            json.loads(upload_json.read_text()),
            json.loads(wait_json.read_text()),
            json.loads(dataset_json.read_text()),
        )
    parse = import_cost()
    print(f"\n{parse}")
    load_after = os.getloadavg()
    print(f"\n{goals}")
    print(f"\nload average (1, 5, 15 min): {load_before} at the start, {load_after} at the end")
    if args.results:
        command = "bash benchmarks/run.sh " + " ".join(sys.argv[1:])
        write_results(command, started, load_before, load_after, uploads, waits, datasets, parse, goals)
    return 0


def goal_table(uploads: dict, waits: dict, datasets: dict) -> str:
    """The issue's goals, each with this run's figures (one per upload size) and whether all of them meet it."""
    conc = uploads["concurrency"]
    sizes = list(uploads["sizes"].items())

    def row(
        goal: str, figures: list[tuple[float, str]], fmt: str, digits: int, bound: float, at_least: bool
    ) -> str:
        """One goal: each ``(value, label)`` shown rounded towards missing ``bound``; met when all of them meet it."""
        shown = ", ".join(
            f"{fmt.format(shown_value(v, digits, at_least=at_least))}{label}" for v, label in figures
        )
        met = all(meets(v, bound, at_least=at_least) for v, _ in figures)
        return f"| {goal} | {shown} | {'yes' if met else '**no**'} |"

    def per_size(value: Callable[[dict], float]) -> list[tuple[float, str]]:
        return [(value(runs), f" ({size} MiB)") for size, runs in sizes]

    def ratio(runs: dict, key: str) -> float:
        return runs[key]["mb_s"] / min(runs["loopback/sdk/1"]["mb_s"], runs["md5_mb_s"])

    def peak_over_baseline(runs: dict) -> float:
        ours = max(v["peak_rss"] for k, v in runs.items() if k != "md5_mb_s" and "/ours/" in k)
        return (ours - uploads["baseline_rss"]) / (1024 * 1024)

    wan_limit = uploads["wan_mb_s"] * conc
    lines = [
        "| goal | this run | met |",
        "|---|---|---|",
        row(
            f"WAN-like link, {conc} in flight: >= 3.5 x the SDK",
            per_size(lambda r: r[f"wan/ours/{conc}"]["mb_s"] / r["wan/sdk/1"]["mb_s"]),
            "{} x",
            2,
            3.5,
            True,
        ),
        row(
            f"WAN-like link, {conc} in flight: <= 1.15 x the link limit's time",
            per_size(lambda r: wan_limit / r[f"wan/ours/{conc}"]["mb_s"]),
            "{} x",
            2,
            1.15,
            False,
        ),
        row(
            f"loopback, md5 included, {conc} in flight: >= 0.9 x min(SDK, one-core md5)",
            per_size(lambda r: ratio(r, f"loopback/ours/{conc}")),
            "{} x",
            2,
            0.9,
            True,
        ),
        row(
            "loopback, md5 included, 1 in flight: >= 0.9 x min(SDK, one-core md5)",
            per_size(lambda r: ratio(r, "loopback/ours/1")),
            "{} x",
            2,
            0.9,
            True,
        ),
        row(
            "peak RSS of our workers <= baseline + 64 MiB",
            per_size(peak_over_baseline),
            "+{} MiB",
            0,
            64,
            False,
        ),
        row("1,000 waits: CPU <= 5% of a core", [(waits["cpu_percent"], "")], "{}%", 1, 5, False),
        row(
            "1,000 waits: CPU <= 0.7 x a bare aiohttp poller's, same run",
            [(waits["cpu_ratio_to_aiohttp"], "")],
            "{} x",
            2,
            0.7,
            False,
        ),
        row("1,000 waits: event loop lag <= 50 ms", [(waits["lag_max_ms"], "")], "{} ms", 1, 50, False),
        row("1,000 waits: <= 16 open sockets", [(waits["peak_sockets"], "")], "{}", 0, 16, False),
        row(
            "validate_dataset >= 0.8 x a bare json.loads pass",
            [
                (r["ours_mb_s"] / r["bare_mb_s"], f" ({purpose})")
                for purpose, r in datasets["validation"].items()
            ],
            "{} x",
            2,
            0.8,
            True,
        ),
        row(
            "split_batch_file of 1 GiB: peak RSS <= baseline + 64 MiB",
            [(datasets["split"]["over_baseline_mib"], "")],
            "+{} MiB",
            0,
            64,
            False,
        ),
        row(
            "validation before an upload: shared read <= separate read",
            [(datasets["upload"]["shared_to_separate"], f" ({datasets['upload']['mb']:.0f} MB fine-tune)")],
            "{} x separate's time",
            2,
            1.0,
            False,
        ),
    ]
    return "\n".join(lines)


def write_results(
    command: str,
    started,
    load_before,
    load_after,
    uploads: str,
    waits: str,
    datasets: str,
    parse: str,
    goals: str,
) -> None:
    text = f"""# Benchmark results

Regenerated by `{command}`: everything below is that one run's output, unedited.

- Machine: {machine()}.
- Date: {started:%Y-%m-%d %H:%M} UTC.
- Load average (1, 5, 15 min): {", ".join(f"{v:.2f}" for v in load_before)} at the start,
  {", ".join(f"{v:.2f}" for v in load_after)} at the end. The machine is shared; its other users add to these.
- To reproduce: `bash benchmarks/run.sh` (add `--big` for 9 GiB, `--quiet-load 0.7` to wait for a quiet
  machine first, `--results` to rewrite this file). It sets up `.venv` when needed.

The uploads go to `strict_server.py` in its own process, which checks what the service checks; it verifies
the md5 just after answering `complete`, and each run waits (untimed) until it has. Each size is first uploaded
to the loopback server once by the SDK and once by ours, untimed, so that every timed loopback run starts alike:
the file in the page cache, and the server overwriting the spool files of checked parts rather than faulting in
fresh pages (on a fresh VM the first touch of a page is slow). The WAN server gives every run fresh files.
Figures beside a goal are rounded towards missing it. On this 2-core machine the
md5 pass, one core's work that cannot be split, is the longest task of an upload on loopback: whatever else
runs (the server, other users of the machine) slows it.

## The issue's goals

{goals}

## Uploads

```
{uploads.strip()}
```

## Deferred waits

```
{waits.strip()}
```

## Datasets

`validate_dataset` beside a bare `json.loads` pass over the same lines; the peak RSS of `split_batch_file`
on a 1 GiB batch file of 3 deployments, against a child that imports the same modules and splits nothing; and
a 256 MiB fine-tuning file uploaded in 64 MiB parts (4 in flight) to `strict_server.py` by fresh workers, three
ways, alternately: without a check (`plain`, the reference), after `validate_dataset` (`separate`), and with
`validate=True`, whose read also gives the md5 (`shared`): what validation costs, and what sharing saves.

```
{datasets.strip()}
```

## DAG-parse cost

```
{parse}
```
"""
    (HERE / "RESULTS.md").write_text(text)
    print(f"wrote {HERE / 'RESULTS.md'}")


if __name__ == "__main__":
    sys.exit(main())
