"""Delete and prune: the hook methods and the operators, on every surface, over real HTTP to the emulator."""

from __future__ import annotations

import logging
import math
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from airflow_provider_aoai.emulator import Emulator
from airflow_provider_aoai.exceptions import AzureOpenAIInvalidArgumentError, AzureOpenAINotFoundError
from airflow_provider_aoai.operators import AzureOpenAIDeleteFileOperator, AzureOpenAIPruneFilesOperator
from tests.conftest import API_KEY, BATCH_LINE, CHAT_LINE, jsonl, set_connection

DAY = 24 * 60 * 60


def surface_connection(emulator, monkeypatch, surface: str) -> tuple[str, str]:
    """A connection to one surface of ``emulator``; returns (conn id, a purpose it can upload)."""
    if surface == "foundry":
        for name, value in emulator.managed_identity_env().items():
            monkeypatch.setenv(name, value)
        set_connection(
            monkeypatch,
            "aoai_surface",
            host=emulator.project_url("demo"),
            extra={"auth_type": "managed_identity"},
        )
        return "aoai_surface", "assistants"
    extra = {"api_version": "v1"} if surface == "v1" else {}
    set_connection(monkeypatch, "aoai_surface", host=emulator.url, password=API_KEY, extra=extra)
    return "aoai_surface", "fine-tune"


def hook_for(conn_id: str = "aoai_default"):
    from airflow_provider_aoai.hooks import AzureOpenAIHook

    return AzureOpenAIHook(aoai_conn_id=conn_id)


# ---------------------------------------------------------------------------------------------- delete
@pytest.mark.parametrize("surface", ["data_plane", "v1", "foundry"])
def test_delete_operator_deletes_on_every_surface(emulator, monkeypatch, chat_file, surface):
    conn_id, purpose = surface_connection(emulator, monkeypatch, surface)
    file = hook_for(conn_id).upload_file(source=str(chat_file), purpose=purpose)
    operator = AzureOpenAIDeleteFileOperator(task_id="delete", aoai_conn_id=conn_id, file_id=file["id"])
    result = operator.execute({})
    assert result == {"object": "file", "id": file["id"], "deleted": True}
    assert file["id"] not in {f["id"] for f in emulator.store.list_files()}
    (dropped,) = operator.get_openlineage_facets_on_complete(None).outputs
    assert dropped.name == f"files/{file['id']}"
    assert dropped.facets["lifecycleStateChange"].lifecycleStateChange.value == "DROP"


@pytest.mark.parametrize("surface", ["data_plane", "v1", "foundry"])
def test_a_file_already_gone_is_a_logged_success(emulator, monkeypatch, chat_file, surface, capsys, caplog):
    conn_id, purpose = surface_connection(emulator, monkeypatch, surface)
    hook = hook_for(conn_id)
    file = hook.upload_file(source=str(chat_file), purpose=purpose)
    hook.delete_file(file_id=file["id"])
    operator = AzureOpenAIDeleteFileOperator(task_id="delete", aoai_conn_id=conn_id, file_id=file["id"])
    with caplog.at_level(logging.INFO):
        result = operator.execute({})
    assert result == {"object": "file", "id": file["id"], "deleted": False}
    captured = capsys.readouterr()  # Airflow 3 logs to stdout through structlog, Airflow 2 through logging
    assert f"File {file['id']} does not exist; nothing to delete" in captured.out + captured.err + caplog.text
    assert operator.get_openlineage_facets_on_complete(None).outputs == []  # nothing was dropped by this run


def test_a_file_id_deleted_twice_is_missing_though_the_service_answers_200(emulator, aoai_conn, chat_file):
    """Recorded live: a ``file-`` id deleted a second time answers 200 ``"deleted": false``, not 404."""
    file = hook_for().upload_file(source=str(chat_file), purpose="fine-tune")
    assert file["id"].startswith("file-")
    assert hook_for().delete_file(file_id=file["id"])["deleted"] is True
    assert hook_for().delete_file(file_id=file["id"]) == {
        "object": "file",
        "deleted": False,
        "id": file["id"],
    }
    assert hook_for().ensure_file_deleted(file_id=file["id"])["deleted"] is False
    with pytest.raises(AzureOpenAINotFoundError, match="already deleted"):
        hook_for().ensure_file_deleted(file_id=file["id"], fail_if_missing=True)
    operator = AzureOpenAIDeleteFileOperator(task_id="delete", file_id=file["id"], fail_if_missing=True)
    with pytest.raises(AzureOpenAINotFoundError):
        operator.execute({})
    assert operator.get_openlineage_facets_on_complete(None).outputs == []


def test_fail_if_missing_fails(emulator, aoai_conn):
    operator = AzureOpenAIDeleteFileOperator(
        task_id="delete", file_id="file-never-existed", fail_if_missing=True
    )
    with pytest.raises(AzureOpenAINotFoundError) as caught:
        operator.execute({})
    assert caught.value.status == 404


def test_a_wrong_api_version_is_not_mistaken_for_a_missing_file(emulator, monkeypatch):
    # The emulator, like the service, answers 404 to every call of an api-version it does not serve.
    set_connection(monkeypatch, host=emulator.url, password=API_KEY, extra={"api_version": "2022-01-01"})
    with pytest.raises(AzureOpenAINotFoundError, match="listing files too"):
        AzureOpenAIDeleteFileOperator(task_id="delete", file_id="file-abc").execute({})


def test_delete_file_id_is_templated(emulator, aoai_conn, chat_file):
    file = hook_for().upload_file(source=str(chat_file), purpose="fine-tune")
    operator = AzureOpenAIDeleteFileOperator(task_id="delete", file_id="{{ params.file_id }}")
    assert "file_id" in operator.template_fields
    operator.render_template_fields({"params": {"file_id": file["id"]}})
    assert operator.execute({})["deleted"] is True


@pytest.mark.parametrize(
    ("arguments", "argument"),
    [
        ({"file_id": ""}, "file_id"),
        ({"file_id": ".."}, "file_id"),  # "files/../x" or "a?b" are ids too: sent as one encoded segment
        ({"file_id": "file-1\nx"}, "file_id"),
        ({"file_id": None}, "file_id"),
        ({"file_id": 42}, "file_id"),
        ({"file_id": "file-1", "fail_if_missing": "yes"}, "fail_if_missing"),
    ],
)
def test_bad_delete_arguments_fail_before_any_request(emulator, aoai_conn, arguments, argument):
    before = len(emulator.faults.requests)
    with pytest.raises(AzureOpenAIInvalidArgumentError) as caught:
        AzureOpenAIDeleteFileOperator(task_id="delete", **arguments).execute({})
    assert caught.value.argument == argument
    assert len(emulator.faults.requests) == before


# ---------------------------------------------------------------------------------------------- prune
@pytest.fixture
def store(monkeypatch):
    """An emulator of its own: prune sees every file of a purpose, so no other test's files may interfere."""
    with Emulator(api_key=API_KEY, processing_seconds=0.1) as emu:
        set_connection(monkeypatch, host=emu.url, password=API_KEY, extra={"retry_backoff": 0.01})
        yield emu


def make_file(emu, tmp_path, name: str, *, days_old: float, purpose: str = "fine-tune") -> str:
    """Upload a file named ``name`` and make it look created ``days_old`` days ago; return its id."""
    path = tmp_path / name
    path.write_bytes(jsonl([BATCH_LINE] if purpose == "batch" else [CHAT_LINE]))
    file = hook_for().upload_file(source=str(path), purpose=purpose)
    emu.store.set_created_at(file["id"], int(time.time() - days_old * DAY))
    return file["id"]


@pytest.fixture
def files(store, tmp_path) -> dict[str, str]:
    return {
        "fresh": make_file(store, tmp_path, "training-fresh.jsonl", days_old=0),
        "10d": make_file(store, tmp_path, "training-10d.jsonl", days_old=10),
        "40d": make_file(store, tmp_path, "training-40d.jsonl", days_old=40),
        "50d": make_file(store, tmp_path, "training-50d.jsonl", days_old=50),
        "60d": make_file(store, tmp_path, "training-60d.jsonl", days_old=60),
        "other-name": make_file(store, tmp_path, "eval-70d.jsonl", days_old=70),
        "other-purpose": make_file(store, tmp_path, "training-batch.jsonl", days_old=80, purpose="batch"),
    }


def remaining(emu) -> set[str]:
    return {f["id"] for f in emu.store.list_files()}


def test_prune_deletes_old_files_of_the_purpose_oldest_first(store, files):
    deleted = hook_for().prune_files(purpose="fine-tune", older_than=timedelta(days=30))
    assert deleted == [files["other-name"], files["60d"], files["50d"], files["40d"]]
    assert remaining(store) == {files["fresh"], files["10d"], files["other-purpose"]}


def test_prune_filters_by_filename_prefix_and_keeps_the_newest(store, files):
    deleted = hook_for().prune_files(
        purpose="fine-tune", older_than=timedelta(days=30), filename_prefix="training-", keep_latest=3
    )
    # newest three of the training-* files (fresh, 10d, 40d) stay whatever their age
    assert deleted == [files["60d"], files["50d"]]
    assert remaining(store) == set(files.values()) - set(deleted)


def test_keep_latest_keeps_old_files_too(store, files):
    deleted = hook_for().prune_files(purpose="fine-tune", older_than=timedelta(0), keep_latest=5)
    assert deleted == [files["other-name"]]


def test_dry_run_lists_what_would_go_and_deletes_nothing(store, files):
    arguments = {"purpose": "fine-tune", "older_than": timedelta(days=30), "keep_latest": 1}
    before = set(remaining(store))
    would = hook_for().prune_files(**arguments, dry_run=True)
    assert remaining(store) == before
    assert len(store.faults.calls("files.delete")) == 0
    assert hook_for().prune_files(**arguments) == would


def test_prune_is_safe_to_retry_and_skips_files_deleted_meanwhile(store, files):
    # The service answers 404 to the first delete, as it does for a file another run deleted meanwhile.
    store.faults.inject("files.delete", status=404)
    deleted = hook_for().prune_files(purpose="fine-tune", older_than=timedelta(days=30))
    assert deleted == [files["60d"], files["50d"], files["40d"]]  # other-name's delete got the 404
    again = hook_for().prune_files(purpose="fine-tune", older_than=timedelta(days=30))
    assert again == [files["other-name"]]
    assert hook_for().prune_files(purpose="fine-tune", older_than=timedelta(days=30)) == []


def test_prune_does_not_count_a_delete_that_deleted_nothing(store, files):
    """A file deleted by someone else between prune's list and its delete: the service answers 200
    ``"deleted": false`` (a ``file-`` id, recorded live); prune must not report it as deleted by this run."""
    victim = files["60d"]
    store.faults.inject("files.delete", delay_seconds=5, path_contains=victim)
    outcome: dict = {}
    pruning = threading.Thread(
        target=lambda: outcome.update(
            ids=hook_for().prune_files(purpose="fine-tune", older_than=timedelta(days=30))
        )
    )
    pruning.start()
    deadline = time.monotonic() + 30
    while not any(r.operation == "files.delete" and victim in r.path for r in store.faults.requests):
        assert time.monotonic() < deadline, "prune never asked to delete the oldest file"
        time.sleep(0.02)
    store.store.delete_file(victim)  # someone else deletes it while prune's request is under way
    pruning.join(timeout=60)
    assert outcome["ids"] == [files["other-name"], files["50d"], files["40d"]]
    assert victim not in remaining(store)


def test_now_sets_where_ages_are_measured_from(store, files):
    ten_days_ago = datetime.now(UTC) - timedelta(days=10)
    would = hook_for().prune_files(
        purpose="fine-tune", older_than=timedelta(days=35), now=ten_days_ago, dry_run=True
    )
    assert would == [files["other-name"], files["60d"], files["50d"]]


def test_ties_are_broken_by_id_so_a_retry_picks_the_same_files(store, tmp_path):
    ids = [make_file(store, tmp_path, f"t{n}.jsonl", days_old=0) for n in range(4)]
    same_second = int(time.time()) - 40 * DAY
    for file_id in ids:
        store.store.set_created_at(file_id, same_second)
    first = hook_for().prune_files(
        purpose="fine-tune", older_than=timedelta(days=30), keep_latest=1, dry_run=True
    )
    assert first == sorted(ids)[:3]  # the highest id counts as the newest and is kept
    assert hook_for().prune_files(purpose="fine-tune", older_than=timedelta(days=30), keep_latest=1) == first


@pytest.mark.parametrize("surface", ["v1", "foundry"])
def test_prune_works_on_every_surface(store, monkeypatch, tmp_path, surface):
    conn_id, purpose = surface_connection(store, monkeypatch, surface)
    path = tmp_path / "old.jsonl"
    path.write_bytes(jsonl([CHAT_LINE]))
    old = hook_for(conn_id).upload_file(source=str(path), purpose=purpose)["id"]
    young = hook_for(conn_id).upload_file(source=str(path), purpose=purpose)["id"]
    store.store.set_created_at(old, int(time.time()) - 8 * DAY)
    assert hook_for(conn_id).prune_files(purpose=purpose, older_than=timedelta(days=7)) == [old]
    assert remaining(store) == {young}


NAN = math.nan


@pytest.mark.parametrize(
    ("arguments", "argument"),
    [
        ({"purpose": None}, "purpose"),
        ({"purpose": ""}, "purpose"),
        ({"purpose": "fine_tune"}, "purpose"),
        ({"older_than": None}, "older_than"),
        ({"older_than": 30}, "older_than"),
        ({"older_than": NAN}, "older_than"),
        ({"older_than": "30d"}, "older_than"),
        ({"older_than": timedelta(days=-1)}, "older_than"),
        ({"filename_prefix": ""}, "filename_prefix"),
        ({"filename_prefix": 5}, "filename_prefix"),
        ({"keep_latest": -1}, "keep_latest"),
        ({"keep_latest": 1.5}, "keep_latest"),
        ({"keep_latest": NAN}, "keep_latest"),
        ({"keep_latest": True}, "keep_latest"),
        ({"keep_latest": "2"}, "keep_latest"),
        ({"dry_run": "yes"}, "dry_run"),
        ({"now": datetime(2026, 1, 1)}, "now"),
        ({"now": "2026-01-01"}, "now"),
    ],
)
def test_bad_prune_arguments_fail_before_any_request(store, files, arguments, argument):
    base = {"purpose": "fine-tune", "older_than": timedelta(days=30)}
    before = len(store.faults.requests)
    with pytest.raises(AzureOpenAIInvalidArgumentError) as caught:
        hook_for().prune_files(**{**base, **arguments})
    assert caught.value.argument == argument
    assert len(store.faults.requests) == before
    assert remaining(store) == set(files.values())


def test_purpose_and_older_than_are_required_by_the_operator(store, files):
    from airflow.providers.common.compat.sdk import AirflowException

    # a missing keyword argument fails when the DAG is parsed (TypeError on Airflow 3, AirflowException on 2)
    with pytest.raises((TypeError, AirflowException), match="older_than"):
        AzureOpenAIPruneFilesOperator(task_id="prune", purpose="fine-tune")  # type: ignore[call-arg]
    with pytest.raises(AzureOpenAIInvalidArgumentError) as caught:
        AzureOpenAIPruneFilesOperator(task_id="prune", purpose="fine-tune", older_than=None).execute({})
    assert caught.value.argument == "older_than"
    assert remaining(store) == set(files.values())


def test_prune_operator_returns_the_ids_and_reports_them_dropped(store, files):
    operator = AzureOpenAIPruneFilesOperator(
        task_id="prune",
        purpose="{{ params.purpose }}",
        filename_prefix="training-",
        older_than=timedelta(days=45),
    )
    operator.render_template_fields({"params": {"purpose": "fine-tune"}})
    deleted = operator.execute({})
    assert deleted == [files["60d"], files["50d"]]
    outputs = operator.get_openlineage_facets_on_complete(None).outputs
    assert [d.name for d in outputs] == [f"files/{file_id}" for file_id in deleted]
    assert {d.facets["lifecycleStateChange"].lifecycleStateChange.value for d in outputs} == {"DROP"}


def test_a_dry_run_operator_drops_nothing_in_lineage(store, files):
    operator = AzureOpenAIPruneFilesOperator(
        task_id="prune", purpose="fine-tune", older_than=timedelta(days=30), dry_run=True
    )
    assert len(operator.execute({})) == 4
    assert operator.get_openlineage_facets_on_complete(None).outputs == []
    assert remaining(store) == set(files.values())
