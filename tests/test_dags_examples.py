"""Every example DAG imports cleanly and runs end to end with dag.test() against the emulator."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import API_KEY, BATCH_LINE, REPO, jsonl, set_connection

DAG_FILES = sorted((REPO / "dags_examples").glob("example_*.py"))


def load_dag(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


def task_states(run) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


def test_there_are_example_dags():
    assert len(DAG_FILES) == 3


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.stem)
def test_example_dag_imports_without_errors(path):
    dag = load_dag(path)
    assert dag.dag_id == path.stem and dag.tasks


def test_dag_bag_has_no_import_errors():
    code = (
        "try:\n"
        "    from airflow.dag_processing.dagbag import DagBag\n"
        "except ImportError:  # Airflow 2\n"
        "    from airflow.models.dagbag import DagBag\n"
        f"bag = DagBag(dag_folder={str(REPO / 'dags_examples')!r})\n"
        "print(len(bag.dags), bag.import_errors)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300
    )
    assert result.stdout.strip().endswith("3 {}"), result.stdout + result.stderr[-2000:]


@pytest.fixture
def example_env(emulator, monkeypatch, airflow_db):
    monkeypatch.setenv("AOAI_EXAMPLE_POLL_SECONDS", "0.2")
    set_connection(monkeypatch, host=emulator.url, password=API_KEY, extra={"retry_backoff": 0.01})
    return emulator


def test_fine_tune_dag_end_to_end(example_env, tmp_path):
    report = tmp_path / "report.json"
    run = load_dag(REPO / "dags_examples" / "example_aoai_fine_tune.py").test(
        run_conf={"workdir": str(tmp_path), "report_path": str(report)}
    )
    assert str(run.state).endswith("success"), task_states(run)
    summary = json.loads(report.read_text())
    assert summary["status"] == "processed" and summary["file_id"].startswith("file-")
    assert (
        example_env.store.get_file(summary["file_id"])["bytes"]
        == (tmp_path / "training.jsonl").stat().st_size
    )
    # the sensor deferred to the trigger, which polled the file
    assert len(example_env.faults.calls("files.get")) >= 1


def test_batch_import_dag_end_to_end_with_a_reschedule_sensor(example_env):
    url = example_env.put_blob("requests.jsonl", jsonl([BATCH_LINE, {**BATCH_LINE, "custom_id": "r2"}]))
    run = load_dag(REPO / "dags_examples" / "example_aoai_batch_import.py").test(
        run_conf={"content_url": url}
    )
    assert str(run.state).endswith("success"), task_states(run)
    imported = [
        f for f in example_env.store.list_files("batch") if f["filename"].startswith("batch-requests-")
    ]
    assert imported and imported[-1]["status"] == "processed"


def test_foundry_dag_end_to_end(example_env, monkeypatch, tmp_path):
    for name, value in example_env.managed_identity_env().items():
        monkeypatch.setenv(name, value)
    set_connection(
        monkeypatch,
        "aoai_foundry",
        host=example_env.project_url("demo"),
        extra={"auth_type": "managed_identity"},
    )
    run = load_dag(REPO / "dags_examples" / "example_aoai_foundry_agent_files.py").test(
        run_conf={"workdir": str(tmp_path)}
    )
    assert str(run.state).endswith("success"), task_states(run)
    assert any(r.path.startswith("/api/projects/demo/files") for r in example_env.faults.requests)
    assert any(f["filename"] == "support-handbook.md" for f in example_env.store.list_files("assistants"))


def test_a_connection_from_the_metadata_database(emulator, airflow_db, tmp_path, monkeypatch):
    """Inside tasks, Airflow serves connections stored in its database (here no AIRFLOW_CONN_* is set)."""
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session

    monkeypatch.delenv("AIRFLOW_CONN_AOAI_DEFAULT", raising=False)
    monkeypatch.setenv("AOAI_EXAMPLE_POLL_SECONDS", "0.2")
    with create_session() as session:
        session.query(Connection).filter(Connection.conn_id == "aoai_default").delete()
        session.add(Connection(conn_id="aoai_default", conn_type="aoai", host=emulator.url, password=API_KEY))
    try:
        report = tmp_path / "report.json"
        run = load_dag(REPO / "dags_examples" / "example_aoai_fine_tune.py").test(
            run_conf={"workdir": str(tmp_path), "report_path": str(report)}
        )
        assert str(run.state).endswith("success"), task_states(run)
        assert json.loads(report.read_text())["status"] == "processed"
    finally:
        with create_session() as session:
            session.query(Connection).filter(Connection.conn_id == "aoai_default").delete()
