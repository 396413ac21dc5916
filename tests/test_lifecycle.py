"""Exactly once across retries: complete retried, uploads resumed, files re-attached (issue 8).

Hook-level tests drive ``upload_multipart`` with checkpoints directly; DAG-level tests run real Airflow
retries with ``dag.test()`` (on Airflow 3.3+, where ``task_state_store`` exists; elsewhere they check that
every try starts over, as documented). Processes killed outright are the system test's business
(``tests/system``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import threading
import time
from importlib.metadata import version
from pathlib import Path

import pytest

from airflow_provider_aoai.exceptions import (
    AzureOpenAIConflictError,
    AzureOpenAIUploadError,
)
from airflow_provider_aoai.transfer.checkpoint import UploadCheckpoint
from tests.conftest import CHAT_LINE, jsonl

AIRFLOW_VERSION = tuple(int(p) for p in version("apache-airflow").split(".")[:2])
HAS_TASK_STATE_STORE = AIRFLOW_VERSION >= (3, 3)
MiB = 1024 * 1024


def _source(tmp_path: Path, name: str | None = None, lines: int = 40000) -> Path:
    # A name of its own: finding a completed upload's file goes by name, size and creation time.
    path = tmp_path / (name or f"{tmp_path.name}.jsonl")
    path.write_bytes(jsonl([CHAT_LINE] * lines))  # ~5.7 MB: 6 parts of 1 MiB
    return path


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _content(emulator, file_id: str) -> bytes:
    stream, _ = emulator.store.open_content(file_id)
    with stream:
        return stream.read()


def _parts_answered(emulator, upload_id: str, status: int = 200) -> int:
    return sum(
        1
        for r in emulator.faults.calls("uploads.parts")
        if f"/uploads/{upload_id}/" in r.path and r.status == status
    )


# ------------------------------------------------------------------------------------------ complete
def test_a_transient_failure_on_complete_is_retried_and_makes_one_file(hook, emulator, tmp_path):
    path = _source(tmp_path, lines=2000)
    files_before = len(emulator.store.list_files())
    emulator.faults.inject("uploads.complete", status=503, retry_after_ms=1)
    upload = hook.upload_multipart(source=path, purpose="fine-tune", part_size=MiB)
    assert upload["status"] == "completed"
    assert [r.status for r in emulator.faults.calls("uploads.complete")] == [503, 200]
    assert len(emulator.store.list_files()) == files_before + 1


def test_a_dropped_complete_is_retried(hook, emulator, tmp_path):
    path = _source(tmp_path, lines=2000)
    emulator.faults.inject("uploads.complete", drop=True)
    upload = hook.upload_multipart(source=path, purpose="fine-tune", part_size=MiB)
    assert upload["status"] == "completed" and _content(emulator, upload["file"]["id"]) == path.read_bytes()


def test_completing_a_completed_upload_finds_its_file(hook, emulator):
    data = jsonl([CHAT_LINE] * 10)
    upload = hook.create_upload(
        filename="again.jsonl", purpose="fine-tune", total_bytes=len(data), mime_type="text/jsonl"
    )
    part = hook.add_upload_part(upload_id=upload["id"], data=data)
    first = hook.complete_upload(upload_id=upload["id"], part_ids=[part["id"]], md5=_md5(data))
    with pytest.raises(AzureOpenAIConflictError):  # without the upload, there is nothing to look up
        hook.complete_upload(upload_id=upload["id"], part_ids=[part["id"]])
    # Without the md5 a file of the same name and size cannot be told from another task's: not adopted.
    with pytest.raises(AzureOpenAIConflictError):
        hook.complete_upload(upload_id=upload["id"], part_ids=[part["id"]], upload=upload)
    again = hook.complete_upload(upload_id=upload["id"], part_ids=[part["id"]], md5=_md5(data), upload=upload)
    assert again["status"] == "completed" and again["file"]["id"] == first["file"]["id"]


def test_a_cancelled_upload_is_not_mistaken_for_a_completed_one(hook, emulator):
    data = jsonl([CHAT_LINE] * 10)
    upload = hook.create_upload(
        filename="gone.jsonl", purpose="fine-tune", total_bytes=len(data), mime_type="text/jsonl"
    )
    part = hook.add_upload_part(upload_id=upload["id"], data=data)
    hook.cancel_upload(upload_id=upload["id"])
    with pytest.raises(AzureOpenAIConflictError):
        hook.complete_upload(upload_id=upload["id"], part_ids=[part["id"]], upload=upload)


# ------------------------------------------------------------------------------------------ resume (hook)
class Recorder:
    """Keeps the last checkpoint, as a store would (JSON round trip included)."""

    def __init__(self) -> None:
        self.saved: dict | None = None
        self.events: list[int | None] = []
        self.lock = threading.Lock()

    def __call__(self, checkpoint: UploadCheckpoint, index: int | None) -> None:
        with self.lock:
            self.saved = checkpoint.to_json()
            self.events.append(index)

    @property
    def checkpoint(self) -> UploadCheckpoint:
        assert self.saved is not None
        return UploadCheckpoint.from_json(self.saved)


def _fail_parts_after(emulator, accepted: int, recorder: Recorder) -> None:
    """Make parts fail for good once ``accepted`` parts were accepted (watching the checkpoint)."""

    def watch() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with recorder.lock:
                done = sum(1 for e in recorder.events if e is not None)
            if done >= accepted:
                emulator.faults.inject("uploads.parts", status=503, count=1000, retry_after_ms=1)
                return
            time.sleep(0.005)

    threading.Thread(target=watch, daemon=True).start()


def _interrupted_upload(hook, emulator, path: Path, recorder: Recorder) -> AzureOpenAIUploadError:
    emulator.faults.set_link(bandwidth_bytes_per_second=8 * MiB)  # each part takes a moment
    _fail_parts_after(emulator, 2, recorder)
    with pytest.raises(AzureOpenAIUploadError) as caught:
        hook.upload_multipart(
            source=path,
            purpose="fine-tune",
            part_size=MiB,
            max_concurrency=1,
            on_checkpoint=recorder,
            keep_on_failure=True,
        )
    emulator.faults.clear()
    return caught.value


def test_a_kept_upload_resumes_sending_only_the_missing_parts(hook, emulator, tmp_path):
    path = _source(tmp_path)
    recorder = Recorder()
    error = _interrupted_upload(hook, emulator, path, recorder)
    checkpoint = recorder.checkpoint
    assert error.cancelled is False and error.upload_id == checkpoint.upload_id
    assert emulator.store.get_upload(checkpoint.upload_id)["status"] == "pending"
    accepted = len(checkpoint.parts)
    assert 2 <= accepted < 6
    creates = len(emulator.faults.calls("uploads.create"))
    upload = hook.upload_multipart(
        source=path,
        purpose="fine-tune",
        part_size=MiB,
        max_concurrency=1,
        resume_from=recorder.saved,
        on_checkpoint=recorder,
    )
    assert upload["id"] == checkpoint.upload_id and upload["status"] == "completed"
    assert len(emulator.faults.calls("uploads.create")) == creates  # no new upload
    # the request log was cleared when the first attempt ended: what it holds now is the resume's parts
    assert _parts_answered(emulator, checkpoint.upload_id) == 6 - accepted
    assert _content(emulator, upload["file"]["id"]) == path.read_bytes()
    assert recorder.checkpoint.file_id == upload["file"]["id"]


def test_resume_sends_exactly_the_missing_parts(hook, emulator, tmp_path):
    path = _source(tmp_path)
    recorder = Recorder()
    _interrupted_upload(hook, emulator, path, recorder)
    checkpoint = recorder.checkpoint
    hook.upload_multipart(
        source=path, purpose="fine-tune", part_size=MiB, max_concurrency=2, resume_from=checkpoint
    )
    assert _parts_answered(emulator, checkpoint.upload_id) == 6 - len(checkpoint.parts)


def test_a_changed_source_starts_a_new_upload_and_cancels_the_old(hook, emulator, tmp_path, caplog, capfd):
    caplog.set_level("INFO")
    path = _source(tmp_path)
    recorder = Recorder()
    _interrupted_upload(hook, emulator, path, recorder)
    stale = recorder.checkpoint
    path.write_bytes(path.read_bytes() + jsonl([CHAT_LINE]))
    upload = hook.upload_multipart(source=path, purpose="fine-tune", part_size=MiB, resume_from=stale)
    assert upload["id"] != stale.upload_id
    assert emulator.store.get_upload(stale.upload_id)["status"] == "cancelled"
    assert _content(emulator, upload["file"]["id"]) == path.read_bytes()
    assert "source changed" in caplog.text + capfd.readouterr().out  # Airflow 3 logs through structlog


@pytest.mark.parametrize("how", ["expired", "cancelled"])
def test_an_unusable_upload_is_replaced(hook, emulator, tmp_path, how):
    path = _source(tmp_path)
    recorder = Recorder()
    _interrupted_upload(hook, emulator, path, recorder)
    saved = dict(recorder.saved or {})
    if how == "expired":
        saved["expires_at"] = int(time.time()) - 1
    else:
        hook.cancel_upload(upload_id=saved["upload_id"])
    upload = hook.upload_multipart(source=path, purpose="fine-tune", part_size=MiB, resume_from=saved)
    assert upload["id"] != saved["upload_id"] and upload["status"] == "completed"
    assert emulator.store.get_upload(saved["upload_id"])["status"] == "cancelled"
    assert _content(emulator, upload["file"]["id"]) == path.read_bytes()


def test_a_completed_checkpoint_reattaches_without_uploading(hook, emulator, tmp_path):
    path = _source(tmp_path, lines=2000)
    recorder = Recorder()
    first = hook.upload_multipart(source=path, purpose="fine-tune", part_size=MiB, on_checkpoint=recorder)
    served = len(emulator.faults.requests)
    again = hook.upload_multipart(source=path, purpose="fine-tune", part_size=MiB, resume_from=recorder.saved)
    assert again["file"]["id"] == first["file"]["id"]
    assert [r.operation for r in emulator.faults.requests[served:]] == ["files.get"]


def test_a_completion_the_checkpoint_missed_is_found(hook, emulator, tmp_path):
    """The try died after the service completed the upload but before the checkpoint said so."""
    path = _source(tmp_path, lines=2000)
    recorder = Recorder()
    first = hook.upload_multipart(source=path, purpose="fine-tune", part_size=MiB, on_checkpoint=recorder)
    saved = dict(recorder.saved or {})
    saved["file_id"] = None
    files = len(emulator.store.list_files())
    again = hook.upload_multipart(source=path, purpose="fine-tune", part_size=MiB, resume_from=saved)
    assert again["file"]["id"] == first["file"]["id"]
    assert len(emulator.store.list_files()) == files


def test_a_malformed_checkpoint_is_refused_before_any_request(hook, emulator, tmp_path):
    from airflow_provider_aoai.exceptions import AzureOpenAIInvalidArgumentError

    before = len(emulator.faults.requests)
    with pytest.raises(AzureOpenAIInvalidArgumentError, match="resume_from"):
        hook.upload_multipart(
            source=_source(tmp_path, lines=10), purpose="fine-tune", resume_from={"version": 99}
        )
    assert len(emulator.faults.requests) == before


def test_without_keep_a_failed_upload_is_cancelled(hook, emulator, tmp_path):
    path = _source(tmp_path)
    recorder = Recorder()
    emulator.faults.inject("uploads.parts", status=503, count=1000, retry_after_ms=1)
    with pytest.raises(AzureOpenAIUploadError) as caught:
        hook.upload_multipart(source=path, purpose="fine-tune", part_size=MiB, on_checkpoint=recorder)
    assert caught.value.cancelled is True
    assert emulator.store.get_upload(recorder.checkpoint.upload_id)["status"] == "cancelled"


# ------------------------------------------------------------------------------------------ DAG level
def _dag(dag_id: str):
    path = Path(__file__).resolve().parent / "dags" / "aoai_lifecycle.py"
    spec = importlib.util.spec_from_file_location("aoai_lifecycle", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {d.dag_id: d for d in vars(module).values() if hasattr(d, "dag_id") and hasattr(d, "test")}[dag_id]


def _tries(run) -> list[int]:
    return [ti.try_number for ti in run.get_task_instances()]


@pytest.fixture
def slow_processing(emulator):
    emulator.limits.processing_seconds = 1.5
    yield
    emulator.limits.processing_seconds = 0.2


@pytest.fixture
def dag_env(aoai_conn, airflow_db):
    return aoai_conn


@pytest.mark.parametrize("dag_id", ["aoai_lifecycle_upload_file", "aoai_lifecycle_import"])
def test_a_retry_reattaches_to_the_file_its_first_try_created(
    dag_env, emulator, slow_processing, tmp_path, dag_id
):
    """Every try waits 0.5 s; processing takes 1.5 s: early tries fail, and each retry must re-attach."""
    path = _source(tmp_path, name=f"{dag_id}.jsonl", lines=100)
    conf = (
        {"source": str(path)}
        if dag_id.endswith("upload_file")
        else {"url": emulator.put_blob(f"{dag_id}.jsonl", path.read_bytes())}
    )
    operation = "files.create" if dag_id.endswith("upload_file") else "files.import"
    before = len(emulator.faults.calls(operation))
    run = _dag(dag_id).test(run_conf=conf)
    assert max(_tries(run)) >= 2  # the first try did fail
    created = len(emulator.faults.calls(operation)) - before
    if HAS_TASK_STATE_STORE:
        assert str(run.state).endswith("success") and created == 1
    else:  # every try starts over: none lives long enough to see its own file processed
        assert created == max(_tries(run))


@pytest.mark.skipif(not HAS_TASK_STATE_STORE, reason="task_state_store arrived in Airflow 3.3")
def test_a_retry_of_a_completed_multipart_reattaches(dag_env, emulator, slow_processing, tmp_path):
    path = _source(tmp_path, name="mp-wait.jsonl", lines=2000)
    before = len(emulator.faults.calls("uploads.create"))
    run = _dag("aoai_lifecycle_multipart_wait").test(run_conf={"source": str(path)})
    assert str(run.state).endswith("success") and max(_tries(run)) >= 2
    assert len(emulator.faults.calls("uploads.create")) - before == 1


@pytest.mark.skipif(not HAS_TASK_STATE_STORE, reason="task_state_store arrived in Airflow 3.3")
def test_a_retry_resumes_the_upload_its_first_try_started(dag_env, emulator, tmp_path):
    path = _source(tmp_path, name="resume.jsonl")
    creates = len(emulator.faults.calls("uploads.create"))
    emulator.faults.set_link(bandwidth_bytes_per_second=8 * MiB)
    seen: dict[str, str] = {}

    def break_after_two_parts() -> None:  # dag.test() must run in the main thread: the watcher does not
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            calls = [r for r in emulator.faults.calls("uploads.parts") if r.status == 200]
            if len(calls) >= 2:
                seen["upload_id"] = calls[0].path.split("/")[3]
                emulator.faults.inject(
                    "uploads.parts", status=503, count=4, retry_after_ms=1
                )  # one part gives up
                return
            time.sleep(0.005)

    watcher = threading.Thread(target=break_after_two_parts, daemon=True)
    watcher.start()
    run = _dag("aoai_lifecycle_multipart").test(run_conf={"source": str(path)})
    watcher.join(timeout=5)
    upload_id = seen.get("upload_id")
    assert upload_id and str(run.state).endswith("success") and max(_tries(run)) == 2
    assert len(emulator.faults.calls("uploads.create")) - creates == 1
    assert _parts_answered(emulator, upload_id) == 6  # every part accepted exactly once, across both tries
    upload = emulator.store.get_upload(upload_id)
    assert upload["status"] == "completed"
    assert _content(emulator, upload["file"]["id"]) == path.read_bytes()


@pytest.mark.skipif(HAS_TASK_STATE_STORE, reason="checks the fallback where task_state_store does not exist")
def test_without_task_state_store_a_retry_starts_over_and_says_so(dag_env, emulator, tmp_path, caplog, capfd):
    caplog.set_level("INFO")
    path = _source(tmp_path, name="fallback.jsonl", lines=100)
    emulator.faults.inject("uploads.parts", status=503, count=4, retry_after_ms=1)
    run = _dag("aoai_lifecycle_multipart").test(run_conf={"source": str(path)})
    assert str(run.state).endswith("success")
    assert "Resume and re-attach are unavailable" in caplog.text + capfd.readouterr().out


def test_force_new_creates_a_file_on_every_try(dag_env, emulator, slow_processing, tmp_path):
    path = _source(tmp_path, name="force-new.jsonl", lines=100)
    before = len(emulator.faults.calls("files.create"))
    run = _dag("aoai_lifecycle_upload_file_force_new").test(run_conf={"source": str(path)})
    # Without re-attaching, no try lives long enough to see its file processed: each makes a new one.
    assert max(_tries(run)) >= 2
    assert len(emulator.faults.calls("files.create")) - before == max(_tries(run))


def test_nothing_stays_pending_after_the_last_try(dag_env, emulator, tmp_path):
    """Parts fail on every try: the first try keeps the upload for the second, the last one cancels it."""
    path = _source(tmp_path, name="failing.jsonl", lines=100)
    before = {u["id"] for u in emulator.store.list_uploads()}
    creates = len(emulator.faults.calls("uploads.create"))
    emulator.faults.inject("uploads.parts", status=503, count=10_000, retry_after_ms=1)
    run = _dag("aoai_lifecycle_multipart_failing").test(run_conf={"source": str(path)})
    assert str(run.state).endswith("failed") and max(_tries(run)) == 2
    created = [u for u in emulator.store.list_uploads() if u["id"] not in before]
    assert created and all(u["status"] == "cancelled" for u in created)
    # Airflow 3.3+: one upload, kept by the first try, resumed and then cancelled by the last.
    # Without task_state_store every try cancels its own.
    expected = 1 if HAS_TASK_STATE_STORE else 2
    assert len(emulator.faults.calls("uploads.create")) - creates == len(created) == expected


@pytest.mark.skipif(not HAS_TASK_STATE_STORE, reason="task_state_store arrived in Airflow 3.3")
def test_mapped_tasks_resume_each_their_own_upload(dag_env, emulator, tmp_path):
    sources = [_source(tmp_path, name=f"mapped-{n}.jsonl") for n in range(2)]
    before = {u["id"] for u in emulator.store.list_uploads()}
    emulator.faults.set_link(bandwidth_bytes_per_second=8 * MiB)
    broken: dict[str, str] = {}

    def break_the_first_upload() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            calls = [r for r in emulator.faults.calls("uploads.parts") if r.status == 200]
            if len(calls) >= 2:
                broken["upload_id"] = calls[0].path.split("/")[3]
                emulator.faults.inject("uploads.parts", status=503, count=4, retry_after_ms=1)
                return
            time.sleep(0.005)

    watcher = threading.Thread(target=break_the_first_upload, daemon=True)
    watcher.start()
    run = _dag("aoai_lifecycle_mapped").test(run_conf={"sources": [str(p) for p in sources]})
    watcher.join(timeout=5)
    assert str(run.state).endswith("success"), [
        (t.map_index, t.state, t.try_number) for t in run.get_task_instances()
    ]
    created = [u for u in emulator.store.list_uploads() if u["id"] not in before]
    # two map indexes, two uploads: the interrupted one was resumed by its own retry, not replaced
    assert len(created) == 2 and all(u["status"] == "completed" for u in created)
    assert broken["upload_id"] in {u["id"] for u in created}
    assert _parts_answered(emulator, broken["upload_id"]) == 6
    contents = sorted(_content(emulator, u["file_id"]) for u in created)
    assert contents == sorted(p.read_bytes() for p in sources)
