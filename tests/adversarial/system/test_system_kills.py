"""Kills at moments the project's system test does not cover, on a real Airflow 3.3 deployment (reusing
tests/system/deployment.py): SIGTERM (mark failed) while `complete` is slow, SIGKILL while `complete` is
slow, SIGKILL right after the upload was created, and a clear of the successful task.

Part of the whole suite (marked ``system``); alone: ``bash scripts/test.sh tests/adversarial/system -s``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.system.conftest import AIRFLOW_TOO_OLD, AIRFLOW_TOO_OLD_REASON
from tests.system.deployment import SUPERVISOR_ESCALATION_SECONDS, Deployment, gone, wait_for

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(AIRFLOW_TOO_OLD, reason=AIRFLOW_TOO_OLD_REASON),
    pytest.mark.timeout(600),
]
DAGS = Path(__file__).resolve().parent / "dags"
MIB = 1024 * 1024
TASK_START = 120.0


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    root = tmp_path_factory.mktemp("adv-system")
    deployment = Deployment(root, DAGS, ["adv_system_no_retry", "adv_system_retry"])
    try:
        deployment.start()
        yield deployment
    finally:
        deployment.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(autouse=True)
def _reset(system):
    system.emulator.reset()
    yield
    for dag_id, run_id in system.api.triggered:
        if system.api.dag_run(dag_id, run_id)["state"] not in ("success", "failed"):
            system.api.set_run_state(dag_id, run_id, "failed")
    system.emulator.reset()


def served(records: list[dict[str, Any]], operation: str) -> list[dict[str, Any]]:
    return [r for r in records if r["operation"] == operation and r["status"] and 200 <= r["status"] < 300]


def in_flight(records: list[dict[str, Any]], operation: str) -> list[dict[str, Any]]:
    return [r for r in records if r["operation"] == operation and r["status"] is None]


def source_file(tmp_path: Path, size: int) -> tuple[Path, str, str]:
    data = os.urandom(size)
    path = tmp_path / "src.bin"
    path.write_bytes(data)
    return path, hashlib.md5(data, usedforsecurity=False).hexdigest(), f"adv-{uuid.uuid4().hex[:8]}.bin"


def uploads_named(system: Deployment, filename: str) -> list[dict[str, Any]]:
    return [
        u for u in system.emulator._json("GET", "/_emulator/uploads")["data"] if u["filename"] == filename
    ]


def test_mark_failed_during_a_slow_complete_exits_within_two_seconds(system, tmp_path, capsys):
    """FINDING (expected): complete takes no stop; on_kill's abort makes the client retry complete, which waits
    for the slow service again. Promise: the task exits ~2 s after SIGTERM (never escalated to SIGKILL)."""
    api, emulator = system.api, system.emulator
    source, _, filename = source_file(tmp_path, 3 * MIB)
    emulator.inject("uploads.complete", delay_seconds=30, count=20)
    run_id = api.trigger("adv_system_no_retry", {"source": str(source), "filename": filename})
    ti = system.wait_for(
        lambda: system.running_task("adv_system_no_retry", run_id, "upload"), timeout=TASK_START, what="task"
    )
    system.wait_for(
        lambda: in_flight(emulator.requests("uploads.complete"), "uploads.complete"),
        timeout=60,
        what="complete in flight",
        interval=0.1,
    )
    process = system.task_process(ti)
    patched = time.time()
    api.set_task_state("adv_system_no_retry", run_id, "upload", "failed")
    wait_for(lambda: gone(process), timeout=30, what="task exit", interval=0.05)
    exited = time.time()
    events = system.task_log_events("adv_system_no_retry", run_id, "upload", 1)
    notice = next((e for e in events if "shouldn't be running anymore" in str(e.get("event"))), None)
    sigterm = notice["timestamp"].timestamp() if notice else patched
    escalated = any(
        "did not terminate in time" in line and f"pid={process.pid}" in line
        for line in system.processes["scheduler"].log_path.read_text(errors="replace").splitlines()
    )
    time.sleep(0)  # no wait: read the upload's state as the run ends
    uploads = uploads_named(system, filename)
    with capsys.disabled():
        print(
            f"\n[adv-system] mark failed during slow complete: SIGTERM->exit {exited - sigterm:.2f}s, "
            f"escalated to SIGKILL: {escalated}, uploads {[(u['status'], len(u['part_ids'])) for u in uploads]}, "
            f"complete requests {[r['status'] for r in emulator.requests('uploads.complete')]}"
        )
    assert not escalated and exited - sigterm < SUPERVISOR_ESCALATION_SECONDS - 1


def test_sigkill_during_a_slow_complete_makes_one_file(system, tmp_path, capsys):
    api, emulator = system.api, system.emulator
    source, md5, filename = source_file(tmp_path, 3 * MIB)
    emulator.inject("uploads.complete", delay_seconds=5, count=1)
    run_id = api.trigger("adv_system_retry", {"source": str(source), "filename": filename})
    ti = system.wait_for(
        lambda: system.running_task("adv_system_retry", run_id, "upload"), timeout=TASK_START, what="task"
    )
    system.wait_for(
        lambda: in_flight(emulator.requests("uploads.complete"), "uploads.complete"),
        timeout=60,
        what="complete in flight",
        interval=0.1,
    )
    system.task_process(ti).kill()
    run = system.wait_for_run("adv_system_retry", run_id, timeout=180)
    log = emulator.requests()
    files = emulator.files(filename)
    with capsys.disabled():
        print(
            f"\n[adv-system] SIGKILL during slow complete: run {run['state']}, creates {len(served(log, 'uploads.create'))}, "
            f"completes {[r['status'] for r in log if r['operation'] == 'uploads.complete']}, files {len(files)}, "
            f"uploads {[(u['status'], len(u['part_ids'])) for u in uploads_named(system, filename)]}"
        )
    assert run["state"] == "success" and len(files) == 1 and len(served(log, "uploads.create")) == 1
    assert hashlib.md5(emulator.content(files[0]["id"]), usedforsecurity=False).hexdigest() == md5
    # A clear of the successful task: it must return the same file without uploading again.
    before = len(log)
    api._json(
        "POST",
        "/api/v2/dags/adv_system_retry/clearTaskInstances",
        json={
            "dry_run": False,
            "dag_run_id": run_id,
            "task_ids": ["upload"],
            "only_failed": False,
            "reset_dag_runs": True,
        },
    )
    system.wait_for(
        lambda: api.dag_run("adv_system_retry", run_id)["state"] in ("queued", "running"),
        timeout=30,
        what="cleared run to restart",
        interval=0.2,
    )
    run = system.wait_for_run("adv_system_retry", run_id, timeout=180)
    after = emulator.requests()[before:]
    with capsys.disabled():
        print(
            f"[adv-system] clear of the successful task: run {run['state']}, requests after the clear "
            f"{sorted({r['operation'] for r in after if r['operation']})}, files {len(emulator.files(filename))}"
        )
    assert run["state"] == "success" and len(emulator.files(filename)) == 1
    assert not [
        r
        for r in after
        if r["operation"] in ("uploads.create", "uploads.parts", "uploads.complete", "files.create")
    ]
    assert api.xcom("adv_system_retry", run_id, "upload")["file"]["id"] == files[0]["id"]


def test_sigkill_right_after_create_resumes_the_same_upload(system, tmp_path, capsys):
    api, emulator = system.api, system.emulator
    source, _md5, filename = source_file(tmp_path, 3 * MIB)
    emulator.inject("uploads.parts", delay_seconds=30, count=2)  # try 1 never gets a part accepted
    run_id = api.trigger("adv_system_retry", {"source": str(source), "filename": filename})
    ti = system.wait_for(
        lambda: system.running_task("adv_system_retry", run_id, "upload"), timeout=TASK_START, what="task"
    )
    system.wait_for(
        lambda: served(emulator.requests("uploads.create"), "uploads.create"),
        timeout=60,
        what="create answered",
        interval=0.05,
    )
    system.task_process(ti).kill()
    run = system.wait_for_run("adv_system_retry", run_id, timeout=180)
    log = emulator.requests()
    files = emulator.files(filename)
    uploads = uploads_named(system, filename)
    with capsys.disabled():
        print(
            f"\n[adv-system] SIGKILL right after create: run {run['state']}, creates {len(served(log, 'uploads.create'))}, "
            f"uploads {[(u['status'], len(u['part_ids'])) for u in uploads]}, files {len(files)}"
        )
    assert run["state"] == "success" and len(files) == 1
    assert len(served(log, "uploads.create")) == 1, "the retry created a second upload"
    assert all(u["status"] != "pending" for u in uploads)
