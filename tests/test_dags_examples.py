"""Every example DAG imports cleanly and runs end to end with dag.test() against the emulator."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.conftest import API_KEY, BATCH_LINE, REPO, jsonl, set_connection

DAG_FILES = sorted((REPO / "dags_examples").glob("example_*.py"))
AIRFLOW_3 = not version("apache-airflow").startswith("2.")
# How a run can be triggered: with a logical date (schedules, backfills, Airflow 2, `dag.test()`), or
# without one, as Airflow 3's `airflow dags trigger` and REST API do by default.
TRIGGERS = [
    pytest.param({}, id="with-logical-date"),
    pytest.param(
        {"logical_date": None},
        id="without-logical-date",
        marks=pytest.mark.skipif(not AIRFLOW_3, reason="on Airflow 2 every run has a logical date"),
    ),
]
# Template variables that exist only in runs with a logical date (Airflow 3), or not at all any more.
LOGICAL_DATE_ONLY = {
    "logical_date", "ds", "ds_nodash", "ts", "ts_nodash", "ts_nodash_with_tz", "data_interval_start",
    "data_interval_end", "prev_data_interval_start_success", "prev_data_interval_end_success",
    "execution_date", "next_ds", "next_ds_nodash", "next_execution_date", "prev_ds", "prev_ds_nodash",
    "prev_execution_date", "prev_execution_date_success", "tomorrow_ds", "tomorrow_ds_nodash",
    "yesterday_ds", "yesterday_ds_nodash",
}  # fmt: skip


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


def template_strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from template_strings(item)
    elif isinstance(value, list | tuple | set):
        for item in value:
            yield from template_strings(item)


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.stem)
def test_no_template_needs_a_logical_date(path):
    """Checked on every Airflow version; the runs below prove it on Airflow 3 too."""
    import jinja2.meta

    dag = load_dag(path)
    environment = dag.get_template_env()  # with Airflow's filters (ds_nodash, ts_nodash, ...)
    for task in dag.tasks:
        for field in task.template_fields:
            for text in template_strings(getattr(task, field, None)):
                needs = jinja2.meta.find_undeclared_variables(environment.parse(text)) & LOGICAL_DATE_ONLY
                assert not needs, f"{task.task_id}.{field} = {text!r} needs {sorted(needs)}"


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


@pytest.mark.parametrize("trigger", TRIGGERS)
def test_fine_tune_dag_end_to_end(example_env, tmp_path, trigger):
    report = tmp_path / "report.json"
    run = load_dag(REPO / "dags_examples" / "example_aoai_fine_tune.py").test(
        run_conf={"workdir": str(tmp_path), "report_path": str(report)}, **trigger
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


@pytest.mark.parametrize("trigger", TRIGGERS)
def test_batch_import_dag_end_to_end_with_a_reschedule_sensor(example_env, trigger):
    url = example_env.put_blob("requests.jsonl", jsonl([BATCH_LINE, {**BATCH_LINE, "custom_id": "r2"}]))
    run = load_dag(REPO / "dags_examples" / "example_aoai_batch_import.py").test(
        run_conf={"content_url": url}, **trigger
    )
    assert str(run.state).endswith("success"), task_states(run)
    imported = [
        f for f in example_env.store.list_files("batch") if f["filename"].startswith("batch-requests-")
    ]
    assert imported and imported[-1]["status"] == "processed"
    # named after the run's start (batch-requests-YYYYMMDDTHHMMSS.jsonl), whatever the trigger
    assert imported[-1]["filename"][len("batch-requests-") :][:8] == run.start_date.strftime("%Y%m%d")


@pytest.mark.parametrize("trigger", TRIGGERS)
def test_foundry_dag_end_to_end(example_env, monkeypatch, tmp_path, trigger):
    for name, value in example_env.managed_identity_env().items():
        monkeypatch.setenv(name, value)
    set_connection(
        monkeypatch,
        "aoai_foundry",
        host=example_env.project_url("demo"),
        extra={"auth_type": "managed_identity"},
    )
    run = load_dag(REPO / "dags_examples" / "example_aoai_foundry_agent_files.py").test(
        run_conf={"workdir": str(tmp_path)}, **trigger
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
