"""Benchmark: dataset validation against a bare ``json.loads`` pass, and the memory of a batch split.

* validation: a batch file (chat completions requests of about 300 to 600 bytes) and a fine-tuning file (chats of
  3 to 6 messages), ``--mb`` MiB each. In the same run, alternately, best of 3 each: the reference, a bare pass
  (the file read in 1 MiB chunks, cut into lines, one ``json.loads`` per line), and ``validate_dataset``, which
  must find no line problem (the batch file holds more requests than one batch job takes: ``too_many_tasks``).
  Goal: ``validate_dataset`` at >= 0.8 x the reference's MB/s.
* split: a ``--split-mb`` MiB batch file of 3 deployments, interleaved, split by ``split_batch_file`` in a child
  process whose RSS a thread samples every 5 ms; its peak against the RSS of a baseline child that imports the
  same modules and splits nothing. Both after their imports: the kernel's peak (``ru_maxrss``, also printed) is
  that of importing Airflow, which would hide a smaller split. Goal: peak RSS <= baseline + 64 MiB. The shards
  are checked: every line in one of them, none over 100,000 lines.
* validation before a multipart upload: a ``--upload-mb`` MiB fine-tuning file (valid chats) uploaded with
  ``AzureOpenAIHook.upload_multipart`` (``--part-mib`` parts, ``--concurrency`` in flight) to
  ``strict_server.py`` in its own process, by a fresh worker per upload (only the call is timed; the file must
  end ``processed``, its md5 verified by the server, and that md5 must be the file's). Three modes, alternately,
  best of 3 each: ``plain``, ``validate=False`` (no check, the md5 computed while the parts are sent), the
  reference; ``separate``, ``validate_dataset`` then ``validate=False`` (a check of its own before the upload);
  ``shared``, ``validate=True`` (the check's read also gives the md5: the upload makes no md5 pass). Printed:
  what validation costs (shared - plain) and what sharing saves (separate - shared). Goal: shared <= separate.
  One untimed upload first, as in ``upload_benchmark.py``, so that every timed run finds the server's spool
  files there to overwrite.

Prints a report (``--json-file`` also writes the figures).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import string
import sys
import tempfile
import time
from pathlib import Path

from goals import shown
from upload_benchmark import Server, run_child, spool_root, worker_env

MiB = 1024 * 1024
MODELS = ("gpt-4o-mini-batch", "gpt-4.1-batch", "o3-mini-batch")
_WORDS_RNG = random.Random(0)
# Mostly ASCII words, some that JSON escapes or that are not ASCII.
WORDS = [
    "".join(_WORDS_RNG.choices(string.ascii_lowercase, k=_WORDS_RNG.randint(2, 10))) for _ in range(5000)
]
WORDS += ["naïve", "café", "Zürich", "日本語", "emoji 🙂", 'a "quote"', "tab\there", "two\nlines"]

# The child: imports, then (unless it is the baseline) one split while a thread samples its RSS every 5 ms.
CHILD = r"""
import json, sys, threading, time
import fsspec, psutil
from airflow_provider_aoai.datasets import split_batch_file
process = psutil.Process()
settled = process.memory_info().rss
if sys.argv[1] == "baseline":
    print(json.dumps({"rss": settled}))
    sys.exit(0)
peak, done = settled, threading.Event()
def sample():
    global peak
    while not done.wait(0.005):
        peak = max(peak, process.memory_info().rss)
sampler = threading.Thread(target=sample, daemon=True)
sampler.start()
started = time.perf_counter()
shards = split_batch_file(sys.argv[2], sys.argv[3])
seconds = time.perf_counter() - started
done.set()
sampler.join()
print(json.dumps({"seconds": seconds, "shards": shards, "rss": settled, "peak": max(peak, process.memory_info().rss)}))
"""

# An upload worker: imports and builds the hook and its client, then one timed call (``separate``: the check,
# then the upload). The upload id's arrival splits the call: before it, the check (and one create request).
UPLOAD_WORKER = r"""
import json, sys, time
from airflow_provider_aoai.datasets import validate_dataset
from airflow_provider_aoai.hooks import AzureOpenAIHook
mode, source, part_size, concurrency = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
hook = AzureOpenAIHook(aoai_conn_id="aoai_bench")
hook.client
marks, md5s = {}, []
started = time.perf_counter()
if mode == "separate":
    problems = validate_dataset(source, "fine-tune")
    marks["validated"] = time.perf_counter() - started
    # Over 512 MiB a fine-tune file is one no single request takes; a multipart upload takes it all the same.
    if any(p.code != "file_too_large" for p in problems):
        sys.exit(f"validate_dataset found problems in a valid fine-tune file: {problems[:3]}")
upload = hook.upload_multipart(
    source=source, purpose="fine-tune", part_size=part_size, max_concurrency=concurrency,
    validate=mode == "shared", progress_interval=3600,
    on_upload_created=lambda _: marks.setdefault("created", time.perf_counter() - started),
    on_md5=md5s.append,
)
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "bytes": upload["bytes"], "file_id": upload["file"]["id"],
                  "md5": md5s[0], **marks}))
"""


def text(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choices(WORDS, k=rng.randint(low, high)))


def write_batch(path: Path, mib: float, models: tuple[str, ...]) -> int:
    """Chat completions requests of about 300 to 600 bytes, the models in turn; returns the line count."""
    rng, target, count = random.Random(1), int(mib * MiB), 0
    systems = [text(rng, 4, 12) for _ in range(200)]
    with path.open("w", encoding="utf-8") as out:
        while out.tell() < target:
            lines = []
            for _ in range(1000):
                body = {
                    "model": models[count % len(models)],
                    "messages": [
                        {"role": "system", "content": rng.choice(systems)},
                        {"role": "user", "content": text(rng, 20, 55)},
                    ],
                    "max_tokens": rng.choice((256, 512, 1024)),
                    "temperature": round(rng.random(), 2),
                }
                request = {"custom_id": f"request-{count}", "method": "POST", "url": "/chat/completions"}
                lines.append(json.dumps({**request, "body": body}, ensure_ascii=False))
                count += 1
            out.write("\n".join(lines) + "\n")
    return count


def write_fine_tune(path: Path, mib: float) -> int:
    """Chats of 3 to 6 messages (a system prompt, then user and assistant turns); returns the line count."""
    rng, target, count = random.Random(2), int(mib * MiB), 0
    with path.open("w", encoding="utf-8") as out:
        while out.tell() < target:
            lines = []
            for _ in range(1000):
                messages = [{"role": "system", "content": text(rng, 4, 15)}]
                for turn in range(rng.randint(2, 5)):
                    role = "user" if turn % 2 == 0 else "assistant"
                    messages.append({"role": role, "content": text(rng, 5, 60)})
                if messages[-1]["role"] != "assistant":
                    messages.append({"role": "assistant", "content": text(rng, 5, 60)})
                lines.append(json.dumps({"messages": messages}, ensure_ascii=False))
                count += 1
            out.write("\n".join(lines) + "\n")
    return count


def bare_pass(path: Path) -> int:
    """The reference: the file in 1 MiB chunks, cut into lines, one ``json.loads`` per line."""
    count, pending = 0, b""
    with path.open("rb") as stream:
        while chunk := stream.read(MiB):
            data = pending + chunk
            cut = data.rfind(b"\n") + 1
            for line in data[:cut].splitlines():
                json.loads(line)
                count += 1
            pending = data[cut:]
    if pending:
        json.loads(pending)
        count += 1
    return count


def measure_validation(path: Path, purpose: str, lines: int, rounds: int = 3) -> dict:
    from airflow_provider_aoai.datasets import validate_dataset

    size, bare, ours = path.stat().st_size, [], []
    for _ in range(rounds):  # alternately, so that both see the same neighbours on a shared machine
        started = time.perf_counter()
        if bare_pass(path) != lines:
            raise SystemExit(f"the bare pass miscounted {path}")
        bare.append(time.perf_counter() - started)
        started = time.perf_counter()
        problems = validate_dataset(path, purpose)
        ours.append(time.perf_counter() - started)
        # Every line is valid; a batch file this size holds more requests (and bytes) than one batch takes.
        if any(p.code not in ("too_many_tasks", "file_too_large") for p in problems):
            raise SystemExit(f"validate_dataset found problems in a valid {purpose} file: {problems[:3]}")
    bare_mb_s, ours_mb_s = size / min(bare) / 1e6, size / min(ours) / 1e6
    return {"mb": size / 1e6, "lines": lines, "bare_mb_s": bare_mb_s, "ours_mb_s": ours_mb_s}


def run_bare(*args: str) -> tuple[dict, int]:
    """One child without a connection; its JSON output and its own peak RSS in bytes."""
    env = {**os.environ, "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING"}
    result, usage = run_child([sys.executable, "-c", CHILD, *args], env, f"{args[0]} child")
    return result, usage.ru_maxrss * 1024


def measure_split(path: Path, lines: int, scratch: Path) -> dict:
    baseline, baseline_max_rss = run_bare("baseline")
    result, max_rss = run_bare("split", str(path), str(scratch / "shards"))
    counts = []
    for shard in result["shards"]:
        with open(shard, "rb") as stream:
            counts.append(sum(chunk.count(b"\n") for chunk in iter(lambda s=stream: s.read(MiB), b"")))
    if sum(counts) != lines or max(counts) > 100_000:
        raise SystemExit(f"the shards hold {sum(counts)} lines (input: {lines}), at most {max(counts)} each")
    size = path.stat().st_size
    return {
        "mb": size / 1e6,
        "lines": lines,
        "shards": len(counts),
        "seconds": result["seconds"],
        "mb_s": size / result["seconds"] / 1e6,
        "peak_rss": result["peak"],
        "baseline_rss": baseline["rss"],
        "over_baseline_mib": (result["peak"] - baseline["rss"]) / MiB,
        "max_rss": max_rss,
        "baseline_max_rss": baseline_max_rss,
    }


UPLOAD_MODES = ("plain", "separate", "shared")


def run_upload_worker(mode: str, server: Server, path: Path, part_size: int, concurrency: int) -> dict:
    """One upload by a fresh worker; its figures (plus its CPU seconds), once the server has verified the md5."""
    command = [sys.executable, "-c", UPLOAD_WORKER, mode, str(path), str(part_size), str(concurrency)]
    result, usage = run_child(command, worker_env(server), f"{mode} upload worker")
    result["cpu_seconds"] = usage.ru_utime + usage.ru_stime
    server.wait_processed(result["file_id"])  # processed: the md5 sent is that of the parts received
    return result


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as stream:
        while chunk := stream.read(4 * MiB):
            digest.update(chunk)
    return digest.hexdigest()


def measure_upload(path: Path, lines: int, part_size: int, concurrency: int, rounds: int = 3) -> dict:
    """The three modes by fresh workers, alternately, ``rounds`` each; every figure from the best run."""
    size, expected = path.stat().st_size, file_md5(path)
    runs: dict[str, list[dict]] = {mode: [] for mode in UPLOAD_MODES}
    spool = spool_root(size)
    try:
        # Overwrites checked parts' spool files (no fresh pages for the server to fault in, as in
        # upload_benchmark.py); the untimed first upload fills that spool, so every timed run starts alike.
        with Server(spool / "datasets", reuse=True) as server:
            run_upload_worker("plain", server, path, part_size, concurrency)
            for turn in range(rounds):
                for mode in UPLOAD_MODES[turn % 3 :] + UPLOAD_MODES[: turn % 3]:  # each mode first once
                    result = run_upload_worker(mode, server, path, part_size, concurrency)
                    if result["bytes"] != size or result["md5"] != expected:
                        raise SystemExit(
                            f"{mode}: {result['bytes']} bytes, md5 {result['md5']}; the file: "
                            f"{size} bytes, md5 {expected}"
                        )
                    runs[mode].append(result)
                    print(
                        f"  {size / MiB:.0f} MiB fine-tune upload, {mode}: {result['seconds']:.2f} s, "
                        f"worker CPU {result['cpu_seconds']:.2f} s",
                        flush=True,
                    )
    finally:
        shutil.rmtree(spool, ignore_errors=True)
    modes = {}
    for mode, results in runs.items():
        best = min(results, key=lambda r: r["seconds"])
        modes[mode] = {
            "seconds": best["seconds"],
            "mb_s": size / best["seconds"] / 1e6,
            "cpu_seconds": best["cpu_seconds"],
            "before_created": best["created"],  # the check (if any) and the create request
            "all_seconds": [r["seconds"] for r in results],
        }
    modes["separate"]["validation_seconds"] = min(r["validated"] for r in runs["separate"])
    plain, separate, shared = (modes[mode]["seconds"] for mode in UPLOAD_MODES)
    return {
        "mb": size / 1e6,
        "lines": lines,
        "part_mib": part_size / MiB,
        "concurrency": concurrency,
        "modes": modes,
        "cost_seconds": shared - plain,
        "cost_percent": 100 * (shared - plain) / plain,
        "separate_cost_seconds": separate - plain,
        "separate_cost_percent": 100 * (separate - plain) / plain,
        "saved_seconds": separate - shared,
        "shared_to_separate": shared / separate,
    }


def report(result: dict) -> None:
    print()
    print("validate_dataset against a bare json.loads pass (1 MiB reads, one json.loads per line), best of 3")
    for purpose, run in result["validation"].items():
        ratio = run["ours_mb_s"] / run["bare_mb_s"]
        print(
            f"  {purpose:<9} {run['mb']:6.0f} MB, {run['lines']:>9,} lines   reference: bare pass "
            f"{run['bare_mb_s']:6.1f} MB/s;  validate_dataset {run['ours_mb_s']:6.1f} MB/s = "
            f"{shown(ratio, 2, at_least=True)} x the reference (goal >= 0.80)"
        )
    split = result["split"]
    print(
        f"split_batch_file: {split['mb']:.0f} MB, {split['lines']:,} lines of {len(MODELS)} deployments -> "
        f"{split['shards']} shards in {split['seconds']:.1f} s ({split['mb_s']:.0f} MB/s)"
    )
    print(
        f"  peak RSS {split['peak_rss'] / MiB:.0f} MiB   reference: baseline child {split['baseline_rss'] / MiB:.0f} "
        f"MiB;  = baseline + {shown(split['over_baseline_mib'], 0, at_least=False)} MiB (goal <= 64)"
    )
    print(
        f"  (kernel peaks, imports included: split child {split['max_rss'] / MiB:.0f} MiB, baseline child "
        f"{split['baseline_max_rss'] / MiB:.0f} MiB)"
    )
    upload = result["upload"]
    modes = upload["modes"]
    plain, separate, shared = (modes[mode] for mode in UPLOAD_MODES)
    print(
        f"validation before a multipart upload: a {upload['mb']:.0f} MB fine-tuning file "
        f"({upload['lines']:,} chats), {upload['part_mib']:g} MiB parts, {upload['concurrency']} in flight, "
        "to strict_server.py; a fresh worker per upload, the call timed, best of 3"
    )
    described = (
        ("reference: plain", "validate=False, md5 while sending", plain),
        ("separate", "validate_dataset, then validate=False", separate),
        ("shared", "validate=True, md5 from the check's read", shared),
    )
    for name, what, run in described:
        print(
            f"  {name:<17} {what:<41} {run['seconds']:6.2f} s {run['mb_s']:6.1f} MB/s   (check + create "
            f"{run['before_created']:.2f} s, parts + complete {run['seconds'] - run['before_created']:.2f} s; "
            f"worker CPU {run['cpu_seconds']:.2f} s)"
        )
    print(
        f"  validation costs (shared - plain): {upload['cost_seconds']:+.2f} s = {upload['cost_percent']:+.0f}% "
        f"of plain;  separate - plain: {upload['separate_cost_seconds']:+.2f} s = "
        f"{upload['separate_cost_percent']:+.0f}% (validate_dataset alone {separate['validation_seconds']:.2f} s)"
    )
    print(
        f"  sharing saves (separate - shared): {upload['saved_seconds']:+.2f} s;  shared = "
        f"{shown(upload['shared_to_separate'], 2, at_least=False)} x separate (goal <= 1.00)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=float, default=200, help="size of each validated file, MiB")
    parser.add_argument("--split-mb", type=float, default=1024, help="size of the split batch file, MiB")
    parser.add_argument(
        "--upload-mb", type=float, default=256, help="size of the fine-tuning file uploaded, MiB"
    )
    parser.add_argument("--part-mib", type=int, default=64, help="part size of those uploads, MiB")
    parser.add_argument("--concurrency", type=int, default=4, help="parts in flight in those uploads")
    parser.add_argument("--json-file", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aoai-bench-datasets-") as scratch_dir:
        scratch = Path(scratch_dir)
        print(f"Writing a {args.mb:g} MiB batch file and a {args.mb:g} MiB fine-tuning file...", flush=True)
        batch_lines = write_batch(scratch / "batch.jsonl", args.mb, MODELS[:1])
        fine_tune_lines = write_fine_tune(scratch / "train.jsonl", args.mb)
        validation = {
            "batch": measure_validation(scratch / "batch.jsonl", "batch", batch_lines),
            "fine-tune": measure_validation(scratch / "train.jsonl", "fine-tune", fine_tune_lines),
        }
        for name in ("batch.jsonl", "train.jsonl"):
            (scratch / name).unlink()
        print(f"Writing a {args.split_mb:g} MiB batch file of {len(MODELS)} deployments...", flush=True)
        split_lines = write_batch(scratch / "big.jsonl", args.split_mb, MODELS)
        split = measure_split(scratch / "big.jsonl", split_lines, scratch)
        (scratch / "big.jsonl").unlink()
        shutil.rmtree(scratch / "shards", ignore_errors=True)
        print(f"Writing a {args.upload_mb:g} MiB fine-tuning file to upload...", flush=True)
        upload_lines = write_fine_tune(scratch / "upload.jsonl", args.upload_mb)
        upload = measure_upload(scratch / "upload.jsonl", upload_lines, args.part_mib * MiB, args.concurrency)
    result = {"validation": validation, "split": split, "upload": upload}
    report(result)
    if args.json_file:
        args.json_file.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
