"""About 60 uploads on CeleryExecutor through a throttled service, across a worker and a triggerer SIGKILL
(issue 19, point 3).

One DAG run maps 40 plain uploads (``POST files``) and 20 multipart uploads (Uploads API), each followed by a
deferrable wait for processing, through the pool ``aoai_uploads``, on a deployment of separate processes:
PostgreSQL (metadata database and Celery result backend), Redis (broker), the emulator with its rate limits
on, api-server, scheduler, dag-processor, two triggerers and two Celery workers. While it runs, one worker is
SIGKILLed with its task processes while it runs uploads (a replacement worker starts), and later one
triggerer is SIGKILLed while it holds deferred waits (the other takes them over). What happened is read from
Airflow's REST API, the emulator's files, uploads, request log and throttle counters, and the raw logs.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.system import services
from tests.system.celery_deployment import CeleryDeployment
from tests.system.conftest import AIRFLOW_TOO_OLD, AIRFLOW_TOO_OLD_REASON, running

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(AIRFLOW_TOO_OLD, reason=AIRFLOW_TOO_OLD_REASON),
    pytest.mark.timeout(900),  # a backstop only: every wait has its own deadline within BUDGET_SECONDS
]

DAGS = Path(__file__).resolve().parent / "scale_dags"
DAG_ID = "aoai_system_scale"
UPLOAD_TASKS = {"upload_plain": "plain", "upload_multipart": "multipart"}
PLAIN, MULTIPART = 40, 20
POOL, POOL_SLOTS = "aoai_uploads", 6
# Requests per second by class, each below what the run asks for at its peaks: creates at 2/s (a bucket of 2;
# 6 upload slots ask for more at once, and at 10/s nothing was ever throttled here), parts at 2/s (each
# multipart upload sends 3 or 4 parts at once), reads at 15/s (the waits' polls are batched: far fewer).
THROTTLE = {"creates": 2.0, "parts": 2.0, "reads": 15.0}
PROCESSING_SECONDS = 20  # each file stays pending this long: the waits are deferred meanwhile
BUDGET_SECONDS = 600.0  # startup, the run, the checks: every wait is cut by then
RUN_TIMEOUT = 420.0
WORKER_KILL_AT = 4  # deferred waits before a worker is killed (with the uploads it runs)
TRIGGERER_KILL_AT = 6  # deferred waits one triggerer holds before it is killed
MIB = 1024 * 1024


def prerequisites() -> str | None:
    """Why the test cannot run here, or ``None``."""
    missing = services.missing()
    if missing:
        return f"the CeleryExecutor system test {missing}"
    modules = ("airflow.providers.celery", "celery", "psycopg2", "asyncpg")
    absent = [m for m in modules if importlib.util.find_spec(m) is None]
    if absent:
        return (
            f"the CeleryExecutor system test needs the project's [system] extra "
            f"({', '.join(absent)} missing): bash scripts/setup.sh"
        )
    return None


@pytest.fixture(scope="module")
def celery_system(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    reason = prerequisites()
    if reason:
        if os.environ.get("CI"):  # CI installs them (.ci/run): a skip there would hide a broken install
            pytest.fail(f"{reason} (CI must run this test)")
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("aoai-system-celery")
    deployment = CeleryDeployment(
        root,
        DAGS,
        [DAG_ID],
        throttle=THROTTLE,
        processing_seconds=PROCESSING_SECONDS,
        budget_seconds=BUDGET_SECONDS,
    )
    with running(request, deployment):
        deployment.api.create_pool(POOL, POOL_SLOTS, "uploads to the (throttled) Files service")
        yield deployment


# ------------------------------------------------------------------------------------------ sources
def chat_line(tag: str, index: int, padding: int = 0) -> bytes:
    line = {
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": f"{tag} question {index}" + " more" * padding},
            {"role": "assistant", "content": f"Answer {index}."},
        ]
    }
    return json.dumps(line).encode() + b"\n"


def write_sources(folder: Path) -> dict[str, str]:
    """40 small and 20 larger (2.2 to 3.8 MiB: 3 or 4 parts of 1 MiB) fine-tune files; filename -> md5.

    Fine-tune files stay pending for the emulator's processing time, so each wait is deferred meanwhile;
    every file has its own content (a retry adopts a file only if its content matches).
    """
    run = uuid.uuid4().hex[:8]
    md5s = {}
    for kind, count in (("plain", PLAIN), ("multipart", MULTIPART)):
        (folder / kind).mkdir(parents=True)
        for i in range(count):
            name = f"scale-{run}-{kind}-{i:02d}.jsonl"
            if kind == "plain":
                data = b"".join(chat_line(name, n) for n in range(20))
            else:
                size = int((2.2 + 1.6 * i / (count - 1)) * MIB)
                line = len(chat_line(name, 0, padding=100))
                data = b"".join(chat_line(name, n, padding=100) for n in range(size // line + 1))
            (folder / kind / name).write_bytes(data)
            md5s[name] = hashlib.md5(data, usedforsecurity=False).hexdigest()
    return md5s


# ------------------------------------------------------------------------------------------ the run
def key(ti: dict[str, Any]) -> str:
    return f"{ti['task_id']}[{ti['map_index']}]"


@dataclass
class Watch:
    """What the test saw and did while the run went on."""

    max_running_uploads: int = 0
    worker_killed: str | None = None
    worker_killed_at: float = 0.0
    worker_tasks: dict[str, int] = field(default_factory=dict)  # TI -> its try number at the kill
    triggerer_killed: str | None = None
    triggerer_killed_at: float = 0.0
    triggerer_held: dict[str, int] = field(default_factory=dict)  # TI -> its try number at the kill
    survivor_job: int | None = None
    taken_over: dict[str, float] = field(default_factory=dict)  # held TI -> when first seen on the survivor
    deferred_peak: int = 0


def uploads_of(tis: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [ti for ti in tis if ti["task_id"] in UPLOAD_TASKS and ti["map_index"] >= 0]


def step(system: CeleryDeployment, run_id: str, watch: Watch) -> dict[str, Any] | None:
    """One look at the run: kill what is due, note what is seen; the run once it is finished."""
    api = system.api
    uploads = uploads_of(api.task_instances(DAG_ID, run_id))
    running = [ti for ti in uploads if ti["state"] == "running"]
    deferred = [ti for ti in uploads if ti["state"] == "deferred"]
    watch.max_running_uploads = max(watch.max_running_uploads, len(running))
    watch.deferred_peak = max(watch.deferred_peak, len(deferred))

    if watch.worker_killed is None and len(deferred) >= WORKER_KILL_AT:
        on_worker = Counter(w for w in (system.worker_of(ti.get("pid")) for ti in running) if w)
        if on_worker:
            name, _ = on_worker.most_common(1)[0]
            candidates = {
                key(ti): ti["try_number"] for ti in running if system.worker_of(ti.get("pid")) == name
            }
            watch.worker_killed_at = system.kill_component(name)
            watch.worker_killed = name
            system.start_component(f"worker-{len(system.worker_names) + 1}")  # its replacement
            # The tasks the kill cut short: still running in the same try now that nothing of their worker
            # is left to report (one that deferred or ended just before the kill is not one of them).
            watch.worker_tasks = {
                key(ti): ti["try_number"]
                for ti in uploads_of(api.task_instances(DAG_ID, run_id))
                if candidates.get(key(ti)) == ti["try_number"] and ti["state"] == "running"
            }

    elif watch.worker_killed is not None and watch.triggerer_killed is None:
        by_job = Counter((ti.get("triggerer_job") or {}).get("id") for ti in deferred)
        by_job.pop(None, None)
        live = {job: name for name, job in system.triggerer_jobs.items() if name in system.processes}
        held = [(count, live[job]) for job, count in by_job.items() if job in live]
        if held and max(held)[0] >= TRIGGERER_KILL_AT and len(live) == 2:
            _, name = max(held)
            job = system.triggerer_jobs[name]
            watch.triggerer_held = {
                key(ti): ti["try_number"]
                for ti in deferred
                if (ti.get("triggerer_job") or {}).get("id") == job
            }
            watch.triggerer_killed_at = system.kill_component(name)
            watch.triggerer_killed = name
            watch.survivor_job = next(j for j, n in live.items() if n != name)

    elif watch.triggerer_killed is not None:
        # A held wait seen deferred on the survivor: its trigger was taken over. (A held wait that left the
        # deferred state at once had fired just before the kill.)
        for ti in deferred:
            held = key(ti) in watch.triggerer_held and key(ti) not in watch.taken_over
            if held and (ti.get("triggerer_job") or {}).get("id") == watch.survivor_job:
                watch.taken_over[key(ti)] = time.time()

    run = api.dag_run(DAG_ID, run_id)
    return run if run["state"] in ("success", "failed") else None


# ------------------------------------------------------------------------------------------ checks
def secrets_in_logs(system: CeleryDeployment) -> tuple[int, list[str]]:
    """How many log files were read, and ``"<secret> in <file>"`` for every canary found in one."""
    files = system.log_files()
    found = []
    for path in files:
        text = path.read_text(errors="replace")
        found += [f"{name} in {path}" for name, secret in system.canaries.items() if secret in text]
    return len(files), found


def http_429s_by_task(system: CeleryDeployment, run_id: str) -> Counter:
    """The client's ``HTTP 429; retry`` lines in each mapped task's logs (every try, and its trigger's)."""
    counts: Counter = Counter()
    base = system.home / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}"
    for task_id in UPLOAD_TASKS:
        for folder in (base / f"task_id={task_id}").glob("map_index=*"):
            index = folder.name.split("=", 1)[1]
            for path in folder.rglob("*"):
                if path.is_file():
                    counts[f"{task_id}[{index}]"] += path.read_text(errors="replace").count("HTTP 429; retry")
    return counts


@dataclass
class Outcome:
    """What Airflow, the service and the logs say once the run is over."""

    uploads: list[dict[str, Any]]  # the mapped upload task instances
    tries: dict[str, int]  # TI -> how many tries it had
    files: list[dict[str, Any]]  # the service's files named after a source
    service_uploads: list[dict[str, Any]]  # the service's uploads named after a source
    log: list[dict[str, Any]]  # the emulator's request log of the run
    throttle: dict[str, dict[str, Any]]  # per class: rate, allowed, throttled
    retries_429: Counter  # TI -> "HTTP 429; retry" lines in its logs
    logs_read: int
    leaks: list[str]

    @property
    def answered_429(self) -> list[dict[str, Any]]:
        return [r for r in self.log if r["status"] == 429]

    @property
    def creates(self) -> list[dict[str, Any]]:
        """``POST files`` and ``POST uploads``: each asks for a new file, whatever the answer."""
        return [r for r in self.log if r["operation"] in ("files.create", "uploads.create")]

    @property
    def served_creates(self) -> list[dict[str, Any]]:
        """The creates the service carried out (answered 2xx): one per file, when no try created twice."""
        return [r for r in self.creates if r["status"] and 200 <= r["status"] < 300]


def observe(system: CeleryDeployment, run_id: str, md5s: dict[str, str], requests_before: int) -> Outcome:
    api, emulator = system.api, system.emulator
    uploads = uploads_of(api.task_instances(DAG_ID, run_id))
    logs_read, leaks = secrets_in_logs(system)
    throttle, log = emulator.throttle(), emulator.requests()[requests_before:]
    emulator.set_throttle(reads=0)  # the run is over: the test's own reads need not wait
    return Outcome(
        uploads=uploads,
        tries={
            key(ti): len(api.mapped_tries(DAG_ID, run_id, ti["task_id"], ti["map_index"])) for ti in uploads
        },
        files=[f for f in emulator.files() if f["filename"] in md5s],
        service_uploads=[u for u in emulator.uploads() if u["filename"] in md5s],
        log=log,
        throttle=throttle,
        retries_429=http_429s_by_task(system, run_id),
        logs_read=logs_read,
        leaks=leaks,
    )


def figures(
    system: CeleryDeployment, outcome: Outcome, watch: Watch, run: dict[str, Any], wall: float
) -> list[str]:
    throttle, tasks, files = outcome.throttle, len(outcome.uploads), max(len(outcome.files), 1)
    allowed = throttle["creates"]["allowed"]
    bound = f"{allowed / THROTTLE['creates']:.1f}s" if THROTTLE["creates"] else "none (no limit)"
    counters = ", ".join(f"{name} {value['throttled']}" for name, value in throttle.items())
    retried = outcome.retries_429.values()
    survivor = next((n for n, j in system.triggerer_jobs.items() if j == watch.survivor_job), None)
    takeover = (
        f"{len(watch.taken_over)} of them seen deferred on {survivor} from "
        f"{min(watch.taken_over.values()) - watch.triggerer_killed_at:.1f}s after the kill"
        if watch.taken_over
        else f"none of them seen deferred on {survivor}"
    )
    worker_tries = [outcome.tries.get(k) for k in sorted(watch.worker_tasks)]
    answered = len(outcome.answered_429)
    tries = dict(sorted(Counter(outcome.tries.values()).items()))
    statuses = dict(Counter(u["status"] for u in outcome.service_uploads))
    return [
        f"celery scale: {tasks} uploads ({PLAIN} plain, {MULTIPART} multipart), pool of {POOL_SLOTS} slots, "
        f"2 workers x 4, 2 triggerers, throttle {THROTTLE} per second, processing {PROCESSING_SECONDS}s: "
        f"run {run['state']}",
        f"   wall time {wall:.1f}s; the throttle's lower bound {bound} ({allowed} creates served at "
        f"{THROTTLE['creates']:g}/s)",
        f"   creates per file: {len(outcome.creates) / files:.2f} ({len(outcome.creates)} POST files and "
        f"POST uploads in the request log, {len(outcome.files)} files); served: "
        f"{len(outcome.served_creates) / files:.2f} per file",
        f"   429s: {answered} in the request log, {answered / tasks:.2f} per task (throttle counters: "
        f"{counters}); retries after a 429 in the task logs: {sum(retried)}, at most "
        f"{max(retried, default=0)} in one task, {sum(1 for v in retried if v)} tasks with any",
        f"   tries per task (tries: tasks): {tries}; most uploads running at once "
        f"{watch.max_running_uploads}, deferred at once {watch.deferred_peak}",
        f"   {watch.worker_killed} SIGKILLed with its task processes while running "
        f"{sorted(watch.worker_tasks)}: their tries now {worker_tries}",
        f"   {watch.triggerer_killed} SIGKILLed holding {len(watch.triggerer_held)} deferred waits: "
        f"{takeover}",
        f"   {len(outcome.files)} files; uploads {statuses}; {outcome.logs_read} logs searched for secrets",
    ]


def test_sixty_uploads_on_celery_survive_a_worker_and_a_triggerer_kill(
    celery_system: CeleryDeployment, tmp_path: Path, say
) -> None:
    system, api, emulator = celery_system, celery_system.api, celery_system.emulator
    md5s = write_sources(tmp_path / "sources")
    requests_before = len(emulator.requests())

    started = time.time()
    run_id = api.trigger(DAG_ID, {"folder": str(tmp_path / "sources")})
    watch = Watch()
    run = system.wait_for(
        lambda: step(system, run_id, watch), timeout=RUN_TIMEOUT, what="the DAG run to finish", interval=1.0
    )
    wall = time.time() - started
    outcome = observe(system, run_id, md5s, requests_before)
    say(*figures(system, outcome, watch, run, wall))

    assert run["state"] == "success"
    assert len(outcome.uploads) == PLAIN + MULTIPART
    assert {key(ti): ti["state"] for ti in outcome.uploads if ti["state"] != "success"} == {}
    # The kills happened where they matter, and did what they should.
    assert watch.worker_killed and watch.worker_tasks, "no worker was killed while it ran uploads"
    assert all(outcome.tries[k] > n for k, n in watch.worker_tasks.items()), "a killed task was not retried"
    assert watch.triggerer_killed and watch.triggerer_held, "no triggerer was killed while it held waits"
    assert all(outcome.tries[k] == n for k, n in watch.triggerer_held.items()), "a deferred wait was retried"
    assert watch.taken_over, "no wait of the killed triggerer was seen on the other one"
    # Exactly one file per source, with its content; no upload left pending.
    per_name = Counter(f["filename"] for f in outcome.files)
    assert {name: count for name, count in per_name.items() if count != 1} == {}
    assert sorted(set(md5s) - set(per_name)) == []
    for file in outcome.files:
        content = emulator.content(file["id"])
        assert hashlib.md5(content, usedforsecurity=False).hexdigest() == md5s[file["filename"]], file
    assert [u["id"] for u in outcome.service_uploads if u["status"] == "pending"] == []
    assert sum(1 for u in outcome.service_uploads if u["status"] == "completed") == MULTIPART
    # The pool held the uploads to its slots; the throttle answered 429s and the clients rode them out.
    assert watch.max_running_uploads <= POOL_SLOTS
    assert outcome.answered_429, "the throttle never answered 429"
    assert sum(v["throttled"] for v in outcome.throttle.values()) >= len(outcome.answered_429)
    # No secret in any log: every process's output, every task and trigger log.
    assert outcome.logs_read > PLAIN + MULTIPART
    assert outcome.leaks == []
