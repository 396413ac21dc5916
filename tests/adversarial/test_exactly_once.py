"""Exactly once (issue 8) under attack: re-attach, resume, cancel policy. dag.test() on Airflow 3.3."""

from __future__ import annotations

import os
from importlib.metadata import version

import pytest

from airflow_provider_aoai.exceptions import AzureOpenAIInvalidArgumentError
from tests.adversarial.helpers import content, load_dag, md5, tries, xcom_value
from tests.conftest import API_KEY, CHAT_LINE, jsonl

AIRFLOW_3_3 = tuple(int(p) for p in version("apache-airflow").split(".")[:2]) >= (3, 3)
needs_state_store = pytest.mark.skipif(not AIRFLOW_3_3, reason="task_state_store arrived in Airflow 3.3")
MiB = 1024 * 1024


@pytest.fixture
def dag_env(aoai_conn, airflow_db, emulator):
    return {"emulator": emulator.url, "key": API_KEY}


def _line(text: str) -> dict:
    return {"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": "ok"}]}


@needs_state_store
def test_a_retry_never_adopts_another_tasks_import_of_the_same_name(dag_env, emulator):
    """FINDING: the first try of `mine` dies before the service acts (connection dropped before handling).
    Its retry looks for "a file named shared.jsonl created since it asked" -- and adopts `other`'s file,
    imported from another URL. Promise (README, Re-attach): a retry re-attaches to *the file its earlier
    try created*; `mine` must end with the content of url_a."""
    data_a = jsonl([_line("from A")] * 3)
    data_b = jsonl([_line("from B, another dataset")] * 3)
    conf = {
        **dag_env,
        "url_a": emulator.put_blob("adv-a.jsonl", data_a),
        "url_b": emulator.put_blob("adv-b.jsonl", data_b),
    }
    dag = load_dag("adv_reattach_same_name")
    run = dag.test(run_conf=conf)
    assert str(run.state).endswith("success")
    assert tries(run)["mine"] == 2  # the first try failed on the dropped connection
    mine = xcom_value(dag.dag_id, run.run_id, "mine")
    other = xcom_value(dag.dag_id, run.run_id, "other")
    assert mine["id"] != other["id"], "the retry of `mine` re-attached to `other`'s file"


@needs_state_store
def test_a_retry_never_adopts_another_tasks_upload_of_the_same_name_and_size(dag_env, emulator, tmp_path):
    """FINDING (same class, upload-file): sources of equal size and the same target filename."""
    source_a, source_b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    source_a.write_bytes(jsonl([_line("AAAA")] * 10))  # 10: the fewest examples a fine-tune file may hold
    source_b.write_bytes(jsonl([_line("BBBB")] * 10))
    assert source_a.stat().st_size == source_b.stat().st_size
    dag = load_dag("adv_reattach_same_name_upload")
    run = dag.test(run_conf={**dag_env, "source_a": str(source_a), "source_b": str(source_b)})
    assert str(run.state).endswith("success") and tries(run)["mine"] == 2
    mine = xcom_value(dag.dag_id, run.run_id, "mine")
    assert content(emulator, mine["id"]) == source_a.read_bytes(), "`mine` returned `other`'s bytes"


@needs_state_store
def test_nothing_stays_pending_when_the_last_try_fails_on_its_input(dag_env, emulator, tmp_path):
    """FINDING: try 1 fails resumably (503 on every part), so its upload is kept for try 2. Before try 2 the
    source is removed (a temp file cleaned up, an upstream re-run): try 2 -- the last -- fails on its input
    before it ever looks at the kept upload. Promise (README, Cancel policy): "Nothing stays pending after
    the task's final state" -- the only exception documented is a last try killed by SIGKILL."""
    source = tmp_path / "kept.jsonl"
    source.write_bytes(jsonl([CHAT_LINE] * 20000))  # ~2.8 MB: 3 parts of 1 MiB
    before = {u["id"] for u in emulator.store.list_uploads()}
    emulator.faults.inject("uploads.parts", status=503, count=10_000, retry_after_ms=1)
    run = load_dag("adv_kept_upload_then_bad_input").test(run_conf={**dag_env, "source": str(source)})
    assert str(run.state).endswith("failed") and tries(run)["upload"] == 2
    created = [u for u in emulator.store.list_uploads() if u["id"] not in before]
    assert len(created) == 1
    assert created[0]["status"] == "cancelled", f"upload left {created[0]['status']} after the final try"


# ------------------------------------------------------------------------------------------ hook level
def _upload_all_parts(hook, data: bytes, filename: str) -> tuple[dict, list[str]]:
    upload = hook.create_upload(
        filename=filename, purpose="fine-tune", total_bytes=len(data), mime_type="text/jsonl"
    )
    part = hook.add_upload_part(upload_id=upload["id"], data=data)
    return upload, [part["id"]]


def test_a_409_on_complete_never_adopts_a_file_with_other_bytes(hook, emulator):
    """FINDING: complete answers 409 (the upload was cancelled meanwhile, e.g. by the on_kill of an earlier
    try); the hook then looks for "the" file by name, purpose and size created since. With exactly one
    candidate it is adopted without comparing its md5 with the md5 the caller passed -- another upload's
    file, with other bytes, is returned as this upload's File. Promise (README): "should several match, the
    one whose content has the upload's md5 ... If that still cannot be told, it raises rather than guess."
    """
    mine = jsonl([_line("mine-1234")] * 5)
    theirs = jsonl([_line("them-5678")] * 5)
    assert len(mine) == len(theirs)
    upload, part_ids = _upload_all_parts(hook, mine, "adv-409.jsonl")
    other_upload, other_parts = _upload_all_parts(hook, theirs, "adv-409.jsonl")
    other = hook.complete_upload(upload_id=other_upload["id"], part_ids=other_parts, md5=md5(theirs))
    hook.cancel_upload(upload_id=upload["id"])  # someone else's cleanup; our complete now answers 409
    try:
        completed = hook.complete_upload(
            upload_id=upload["id"], part_ids=part_ids, md5=md5(mine), upload=upload
        )
    except Exception as exc:  # any refusal keeps the promise
        assert "409" in str(exc) or "cannot tell" in str(exc)
        return
    assert completed["file"]["id"] != other["file"]["id"], "adopted another upload's file (other bytes)"


def test_resuming_a_cancelled_upload_never_adopts_another_file(hook, emulator, tmp_path):
    """FINDING (same root cause through upload_multipart): a checkpoint whose upload had every part accepted
    but was then cancelled (mark failed after the last part, then a clear); a sibling task uploaded a
    same-named, same-sized file meanwhile. The resumed call returns the sibling's file."""
    from airflow_provider_aoai.transfer.checkpoint import UploadCheckpoint

    source = tmp_path / "adv-resume-409.jsonl"
    source.write_bytes(jsonl([_line("mine-1234")] * 16000))  # ~1.5 MB: 2 parts of 1 MiB
    sibling = jsonl([_line("sib!-5678")] * 16000)
    assert len(sibling) == source.stat().st_size
    saved: list[dict] = []
    stop_after_parts = __import__("threading").Event()

    def keep(checkpoint, index):
        saved.append(checkpoint.to_json())
        if len(checkpoint.parts) == 2:
            stop_after_parts.set()

    # Try 1: every part accepted, then the task is stopped before complete (keep_on_failure keeps it).
    emulator.faults.inject("uploads.complete", status=503, count=100, retry_after_ms=1)
    with pytest.raises(Exception):
        hook.upload_multipart(
            source=source, purpose="fine-tune", part_size=MiB, on_checkpoint=keep, keep_on_failure=True
        )
    emulator.faults.clear()
    checkpoint = UploadCheckpoint.from_json(saved[-1])
    assert len(checkpoint.parts) == 2 and checkpoint.file_id is None
    # Meanwhile: the upload is cancelled (mark failed / on_kill), and a sibling uploads its file.
    hook.cancel_upload(upload_id=checkpoint.upload_id)
    up, parts = _upload_all_parts(hook, sibling, source.name)
    theirs = hook.complete_upload(upload_id=up["id"], part_ids=parts, md5=md5(sibling))
    # Try 2 (a clear): resume.
    result = hook.upload_multipart(source=source, purpose="fine-tune", part_size=MiB, resume_from=checkpoint)
    assert result["file"]["id"] != theirs["file"]["id"], "resumed upload returned the sibling's file"
    assert content(emulator, result["file"]["id"]) == source.read_bytes()


def test_a_failing_checkpoint_listener_never_leaves_the_upload_pending(hook, emulator, tmp_path):
    """FINDING: the operator's on_checkpoint writes task_state_store (an API call that can fail). If it raises
    right after the upload was created, the upload stays `pending` and the caller gets the raw error --
    neither cancelled nor kept on purpose. Same for on_upload_created."""
    source = tmp_path / "adv-listener.jsonl"
    source.write_bytes(jsonl([CHAT_LINE] * 100))
    before = {u["id"] for u in emulator.store.list_uploads()}

    def broken_store(checkpoint, index):
        raise ConnectionError("task_state_store: the API server is unreachable")

    with pytest.raises(Exception) as caught:
        hook.upload_multipart(source=source, purpose="fine-tune", part_size=MiB, on_checkpoint=broken_store)
    created = [u for u in emulator.store.list_uploads() if u["id"] not in before]
    assert [u["status"] for u in created] == ["cancelled"], f"{caught.value!r}; uploads: {created}"


@needs_state_store
def test_a_lost_upload_answer_is_reattached(dag_env, emulator, tmp_path):
    """The service stores the file, the answer is lost, the retry finds it by name, size and content."""
    source = tmp_path / "lost.jsonl"
    source.write_bytes(jsonl([CHAT_LINE] * 10))
    before = {f["id"] for f in emulator.store.list_files()}
    dag = load_dag("adv_lost_answer_upload")
    run = dag.test(run_conf={**dag_env, "source": str(source), "filename": "adv-plain-name.jsonl"})
    assert str(run.state).endswith("success") and tries(run)["upload"] == 2
    created = [f for f in emulator.store.list_files() if f["id"] not in before]
    assert len(created) == 1, f"{len(created)} files: {[f['filename'] for f in created]}"
    assert created[0]["filename"] == "adv-plain-name.jsonl"


def test_a_filename_with_a_double_quote_is_refused_before_any_request(hook, emulator, tmp_path):
    """Was a finding: a `"` travels HTML5-escaped (%22) in the multipart header and is stored that way, so
    a retry's lookup by name missed it (a duplicate). Decided: such names are refused before any request."""
    source = tmp_path / "quoted.jsonl"
    source.write_bytes(jsonl([CHAT_LINE] * 10))
    served = len(emulator.faults.requests)
    for call in (
        lambda: hook.upload_file(source=source, purpose="fine-tune", filename='adv-"quoted"-name.jsonl'),
        lambda: hook.upload_multipart(source=source, purpose="fine-tune", filename='adv-"quoted".jsonl'),
    ):
        with pytest.raises(AzureOpenAIInvalidArgumentError) as caught:
            call()
        assert caught.value.argument == "filename"
    assert len(emulator.faults.requests) == served


# ------------------------------------------------------------------------------------------ being killed
def _stop_while(hook, emulator, operation: str, call) -> tuple[float, object]:
    """Run ``call(stop)`` in a thread; when ``operation`` is in flight at the service, do what on_kill does
    (set the stop event, abort the requests in flight). Returns (seconds from the kill to the return, result
    or exception)."""
    import threading
    import time

    stop = threading.Event()
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["result"] = call(stop)
        except BaseException as exc:
            outcome["result"] = exc
        outcome["at"] = time.monotonic()

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 30
    while not emulator.faults.in_flight.get(operation) and time.monotonic() < deadline:
        time.sleep(0.005)
    killed = time.monotonic()
    stop.set()
    hook.abort_in_flight()
    thread.join(timeout=60)
    return outcome["at"] - killed, outcome["result"]


def test_a_kill_during_a_slow_complete_stops_within_two_seconds(hook, emulator, tmp_path):
    """FINDING: complete_upload takes no `stop`. When the task is killed while `complete` is in flight,
    on_kill aborts the socket, the client takes that for a dropped connection and *retries* complete (it is
    retried like a read); the retry waits for the slow service. Here the service takes 3 s per complete: the
    call returns ~3 s after the kill -- and returns the completed upload, as if never stopped. In a real
    deployment the supervisor SIGKILLs 5 s after SIGTERM whenever complete is slower than that.
    Promise: "On SIGTERM the requests in flight are aborted ... and the task exits within about 2 s";
    upload_multipart: ":raises AzureOpenAIStoppedError: stop was set"."""
    source = tmp_path / "adv-slow-complete.bin"
    source.write_bytes(os.urandom(2 * MiB))
    emulator.faults.inject("uploads.complete", delay_seconds=3, count=5)
    elapsed, result = _stop_while(
        hook,
        emulator,
        "uploads.complete",
        lambda stop: hook.upload_multipart(source=source, purpose="assistants", part_size=MiB, stop=stop),
    )
    assert elapsed < 2.0, f"returned {elapsed:.1f}s after the kill with {type(result).__name__}"
    assert isinstance(result, Exception), "a stopped upload returned as completed"


def test_held_a_kill_during_parts_stops_at_once(hook, emulator, tmp_path):
    source = tmp_path / "adv-slow-parts.bin"
    source.write_bytes(os.urandom(4 * MiB))
    emulator.faults.inject("uploads.parts", delay_seconds=5, count=10)
    uploads = {u["id"] for u in emulator.store.list_uploads()}
    elapsed, result = _stop_while(
        hook,
        emulator,
        "uploads.parts",
        lambda stop: hook.upload_multipart(source=source, purpose="assistants", part_size=MiB, stop=stop),
    )
    assert elapsed < 2.0 and isinstance(result, Exception)
    assert [u["status"] for u in emulator.store.list_uploads() if u["id"] not in uploads] == ["cancelled"]


def test_held_a_changed_source_between_tries_starts_over_and_cancels_the_old_upload(hook, emulator, tmp_path):
    from airflow_provider_aoai.transfer.checkpoint import UploadCheckpoint

    source = tmp_path / "adv-changed-between.bin"
    source.write_bytes(os.urandom(3 * MiB))
    saved: list[dict] = []
    emulator.faults.inject("uploads.parts", status=503, count=1000, retry_after_ms=1, path_contains="/parts")
    with pytest.raises(Exception):
        hook.upload_multipart(
            source=source,
            purpose="assistants",
            part_size=MiB,
            max_concurrency=1,
            on_checkpoint=lambda c, i: saved.append(c.to_json()),
            keep_on_failure=True,
        )
    emulator.faults.clear()
    old = UploadCheckpoint.from_json(saved[-1])
    assert emulator.store.get_upload(old.upload_id)["status"] == "pending"
    new_bytes = os.urandom(3 * MiB)
    source.write_bytes(new_bytes)  # same size, new content and mtime
    result = hook.upload_multipart(source=source, purpose="assistants", part_size=MiB, resume_from=old)
    assert result["id"] != old.upload_id
    assert emulator.store.get_upload(old.upload_id)["status"] == "cancelled"
    assert content(emulator, result["file"]["id"]) == new_bytes
