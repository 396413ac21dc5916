"""Every example DAG imports cleanly and runs end to end with dag.test() against the emulator."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.conftest import API_KEY, BATCH_LINE, CHAT_LINE, REPO, jsonl, set_connection

AIRFLOW_2 = version("apache-airflow").startswith("2.")

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
    assert len(DAG_FILES) == 7


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
    assert result.stdout.strip().endswith("7 {}"), result.stdout + result.stderr[-2000:]


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
def test_batch_prepare_dag_splits_uploads_expiring_files_and_returns_their_ids(
    example_env, monkeypatch, tmp_path, trigger
):
    set_connection(
        monkeypatch,
        "aoai_batch",
        host=example_env.url,
        password=API_KEY,
        extra={"api_version": "v1", "retry_backoff": 0.01},
    )
    report = tmp_path / "inputs.json"
    run = load_dag(REPO / "dags_examples" / "example_aoai_batch_prepare.py").test(
        run_conf={"workdir": str(tmp_path), "requests": 3600, "report_path": str(report)}, **trigger
    )
    assert str(run.state).endswith("success"), task_states(run)
    inputs = json.loads(report.read_text())
    # three deployments of 1,200 requests each, at most 1,000 per shard: two shards each
    assert len(inputs) == 6
    shards = sorted((tmp_path / "shards").iterdir())
    assert len(shards) == 6
    lines = [line for shard in shards for line in shard.read_bytes().splitlines()]
    assert sorted(lines) == sorted((tmp_path / "requests.jsonl").read_bytes().splitlines())
    for shard in shards:
        models = {json.loads(line)["body"]["model"] for line in shard.read_bytes().splitlines()}
        assert len(models) == 1 and len(shard.read_bytes().splitlines()) <= 1000
    for entry in inputs:
        stored = example_env.store.get_file(entry["input_file_id"])
        assert stored["purpose"] == "batch" and stored["status"] == "processed"
        assert stored["expires_at"] == stored["created_at"] + 14 * 24 * 3600 == entry["expires_at"]


@pytest.mark.parametrize("trigger", TRIGGERS)
def test_mapped_uploads_dag_uploads_every_document_once_in_its_pool(example_env, tmp_path, trigger):
    report = tmp_path / "report.json"
    dag = load_dag(REPO / "dags_examples" / "example_aoai_mapped_uploads.py")
    assert {task.pool for task in dag.tasks if task.task_id == "upload_document"} == {"aoai_uploads"}
    before = {f["id"] for f in example_env.store.list_files()}
    run = dag.test(
        run_conf={"workdir": str(tmp_path), "documents": 12, "report_path": str(report)}, **trigger
    )
    assert str(run.state).endswith("success"), task_states(run)
    summary = json.loads(report.read_text())
    created = [f for f in example_env.store.list_files() if f["id"] not in before]
    assert summary["files"] == 12 and sorted(summary["ids"]) == sorted(f["id"] for f in created)
    assert sorted(f["filename"] for f in created) == [f"policy-{n:03d}.md" for n in range(12)]
    assert all(f["status"] == "processed" for f in created)


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


# ---------------------------------------------------------------------------------------------- asset events
def airflow_cli(*commands: list[str]) -> None:
    """Run ``airflow`` CLI commands, as a user would, in a child process with this test's environment.

    (In this process the CLI would set up Airflow's logging and secrets masker for the rest of the session.)
    """
    code = (
        "import sys\n"
        "from airflow.cli import cli_parser\n"
        f"for argv in {[list(command) for command in commands]!r}:\n"
        "    args = cli_parser.get_parser().parse_args(argv)\n"
        "    args.func(args)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def xcom_value(dag_id: str, run_id: str, task_id: str, map_index: int = -1):
    """A task's return value, read from the metadata database."""
    from airflow.utils.session import create_session

    if AIRFLOW_2:
        from airflow.models.xcom import XCom
    else:
        from airflow.models.xcom import XComModel as XCom
    with create_session() as session:
        row = (
            session.query(XCom)
            .filter_by(dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=map_index, key="return_value")
            .one()
        )
        return row.value if AIRFLOW_2 else XCom.deserialize_value(row)  # Airflow 2 decodes on load


def asset_events_of(run_id: str) -> list:
    """The asset (dataset) events a producer run wrote, as (uri, extra)."""
    from airflow.utils.session import create_session

    if AIRFLOW_2:
        from airflow.models.dataset import DatasetEvent as Event
    else:
        from airflow.models.asset import AssetEvent as Event
    with create_session() as session:
        events = session.query(Event).filter(Event.source_run_id == run_id).all()
        return [((e.dataset if AIRFLOW_2 else e.asset).uri, e.extra) for e in events]


def schedule_asset_triggered_runs(dag_id: str):
    """One pass of the scheduler's own code that creates the runs queued asset events call for.

    Returns the new run of ``dag_id`` as (run id, run type, extras of the events it consumed), or None.
    """
    from airflow.jobs.job import Job
    from airflow.jobs.scheduler_job_runner import SchedulerJobRunner
    from airflow.models.dag import DagModel
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    runner = SchedulerJobRunner(job=Job())
    with create_session() as session:
        before = session.query(DagRun).filter(DagRun.dag_id == dag_id).count()
        query, triggered = DagModel.dags_needing_dagruns(session)
        ready = [model for model in query if model.dag_id == dag_id]
        if not ready:
            return None
        if AIRFLOW_2:
            runner._create_dag_runs_dataset_triggered(ready, triggered, session)
        else:
            runner._create_dag_runs_asset_triggered(dag_models=ready, session=session)
    with create_session() as session:
        runs = session.query(DagRun).filter(DagRun.dag_id == dag_id).order_by(DagRun.id).all()
        if len(runs) == before:
            return None
        run = runs[-1]
        consumed = run.consumed_dataset_events if AIRFLOW_2 else run.consumed_asset_events
        return run.run_id, str(run.run_type), [event.extra for event in consumed]


def test_the_upload_asset_event_triggers_the_consumer_which_reads_the_file_id(example_env, tmp_path):
    """Producer and consumer end to end: the fine-tune DAG's upload updates TRAINING_SET with the file in
    the event's extra; the scheduler's code creates the consumer's run from that event; the consumer's
    tasks (run by ``airflow tasks test`` against that run) read the file id and use it."""
    producer_file = REPO / "dags_examples" / "example_aoai_fine_tune.py"
    consumer_file = REPO / "dags_examples" / "example_aoai_dataset_consumer.py"
    producer, consumer = load_dag(producer_file), load_dag(consumer_file)
    uri = "azure-openai://myres.openai.azure.com/files/fine-tune/training.jsonl"
    assert [a.uri for a in producer.get_task("upload_dataset").outlets] == [uri]

    # What a deployment has done before: the DAG processor parsed the DAGs; someone unpaused the consumer.
    airflow_cli(["dags", "reserialize"], ["dags", "unpause", consumer.dag_id])
    schedule_asset_triggered_runs(consumer.dag_id)  # ... and the scheduler is up to date with older events

    run = producer.test(run_conf={"workdir": str(tmp_path), "report_path": str(tmp_path / "report.json")})
    assert str(run.state).endswith("success"), task_states(run)
    file_id = json.loads((tmp_path / "report.json").read_text())["file_id"]
    extra = {
        "file_id": file_id,
        "filename": "training.jsonl",
        "bytes": (tmp_path / "training.jsonl").stat().st_size,
        "purpose": "fine-tune",
        # the file's status when the upload completed (processing follows; the consumer waits for it)
        "status": xcom_value(producer.dag_id, run.run_id, "upload_dataset")["file"]["status"],
    }
    assert asset_events_of(run.run_id) == [(uri, extra)]

    created = schedule_asset_triggered_runs(consumer.dag_id)
    assert created is not None, "the asset event queued no run of the consumer"
    run_id, run_type, consumed = created
    # A first run also consumes older events of the asset (earlier tests uploaded training sets too);
    # the consumer uses the latest, which is ours.
    assert run_type.endswith("triggered") and extra in consumed
    airflow_cli(
        *(
            ["tasks", "test", consumer.dag_id, task_id, run_id]
            for task_id in ("read_training_file", "wait_until_processed", "start_fine_tuning")
        )
    )
    assert xcom_value(consumer.dag_id, run_id, "read_training_file")["file_id"] == file_id
    assert xcom_value(consumer.dag_id, run_id, "wait_until_processed")["status"] == "processed"
    assert xcom_value(consumer.dag_id, run_id, "start_fine_tuning")["training_file"] == file_id


# ---------------------------------------------------------------------------------------------- retention
DAY = 24 * 60 * 60


@pytest.fixture
def retention_env(monkeypatch, airflow_db):
    """An emulator of its own (prune sees every file of a purpose) behind aoai_default."""
    from airflow_provider_aoai.emulator import Emulator

    with Emulator(api_key=API_KEY, processing_seconds=0.1) as emu:
        set_connection(monkeypatch, host=emu.url, password=API_KEY, extra={"retry_backoff": 0.01})
        yield emu


def test_weekly_retention_dag_end_to_end(retention_env, tmp_path):
    from airflow_provider_aoai.hooks import AzureOpenAIHook

    hook = AzureOpenAIHook()

    def make(name: str, days_old: int) -> str:
        (tmp_path / name).write_bytes(jsonl([CHAT_LINE]))
        file_id = hook.upload_file(source=str(tmp_path / name), purpose="fine-tune")["id"]
        retention_env.store.set_created_at(file_id, int(time.time()) - days_old * DAY)
        return file_id

    fresh, d40, d41, d42 = (
        make("training.jsonl", 0),
        make("training-a.jsonl", 40),
        make("training-b.jsonl", 41),
        make("training-c.jsonl", 42),
    )
    stray = make("eval.jsonl", 90)  # not a training file: only the run conf names it
    dag = load_dag(REPO / "dags_examples" / "example_aoai_weekly_retention.py")
    assert (getattr(dag, "schedule", None) or dag.schedule_interval) == "@weekly"  # Airflow 3, 2

    run = dag.test(run_conf={"file_ids": [stray, "file-already-gone"]})
    assert str(run.state).endswith("success"), task_states(run)
    # the two newest training files stay (fresh, 40 days); the rest of those older than 30 days go
    assert xcom_value(dag.dag_id, run.run_id, "list_old_training_files") == [d42, d41]
    assert xcom_value(dag.dag_id, run.run_id, "prune_old_training_files") == [d42, d41]
    assert xcom_value(dag.dag_id, run.run_id, "delete_listed_files", 0) == {
        "object": "file",
        "id": stray,
        "deleted": True,
    }
    assert xcom_value(dag.dag_id, run.run_id, "delete_listed_files", 1)["deleted"] is False
    assert {f["id"] for f in retention_env.store.list_files()} == {fresh, d40}


def test_producer_and_consumer_name_the_same_asset():
    producer = load_dag(REPO / "dags_examples" / "example_aoai_fine_tune.py")
    consumer = load_dag(REPO / "dags_examples" / "example_aoai_dataset_consumer.py")
    condition = getattr(consumer.timetable, "asset_condition", None) or consumer.timetable.dataset_condition
    assert [a.uri for a in producer.get_task("upload_dataset").outlets] == [a.uri for a in condition.objects]
