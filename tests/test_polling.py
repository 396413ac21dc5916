"""The triggers' polls, scheduled together: one read per connection per tick, by the list when many files are
due and it is cheaper, one GET each otherwise; never an answer about another file, never a wait left
hanging."""

from __future__ import annotations

import asyncio
import time

import pytest

from airflow_provider_aoai import polling
from airflow_provider_aoai.emulator import Emulator, Throttle
from airflow_provider_aoai.hooks import AzureOpenAIHook
from airflow_provider_aoai.shared_clients import shared_clients
from airflow_provider_aoai.triggers import AzureOpenAIFileStatusTrigger
from tests.conftest import API_KEY, CHAT_LINE, jsonl, set_connection

MANY = polling.LIST_MIN_FILES + 10


@pytest.fixture
def own_emulator(monkeypatch, tmp_path):
    """An emulator of this test's own, so that its list holds this test's files only."""
    shared_clients.clear()
    # Not throttled: the tests create 60 files at once, and measure polls, not the rate limit.
    with Emulator(api_key=API_KEY, processing_seconds=0.3, throttle=Throttle.off()) as emulator:
        set_connection(
            monkeypatch,
            "aoai_polling",
            host=emulator.url,
            password=API_KEY,
            extra={"max_retries": 1, "retry_backoff": 0.01},
        )
        yield emulator
    shared_clients.clear()


def upload(count: int, tmp_path) -> list[str]:
    hook = AzureOpenAIHook(aoai_conn_id="aoai_polling")
    source = tmp_path / "train.jsonl"
    source.write_bytes(jsonl([CHAT_LINE] * 10))
    return [hook.upload_file(source=source, purpose="fine-tune")["id"] for _ in range(count)]


def wait_for_all(file_ids: list[str], poll: float = 0.2, *, emulator=None, held=()) -> list[dict]:
    """Run a trigger per file until each yields its event. The ``held`` files of ``emulator`` read
    ``running`` for the first polls, then ``processed``, all at once (so none finishes before the others)."""
    for file_id in held:
        emulator.store.force_statuses(file_id, ["running"])

    async def main():
        runs = [
            AzureOpenAIFileStatusTrigger(
                file_id=file_id, aoai_conn_id="aoai_polling", poll_interval=poll, end_time=time.time() + 60
            ).run()
            for file_id in file_ids
        ]
        events = asyncio.gather(*(anext(run) for run in runs))
        if held:
            await asyncio.sleep(3 * poll)
            for file_id in held:
                emulator.store.force_statuses(file_id, ["processed"])
        return [event.payload for event in await events]

    return asyncio.run(main())


def reads(emulator, operation: str, file_ids=None) -> int:
    calls = emulator.faults.calls(operation)
    if file_ids is None:
        return len(calls)
    return sum(1 for call in calls if call.params.get("file_id") in file_ids)


def test_many_waits_on_one_connection_are_read_by_the_list(own_emulator, tmp_path):
    file_ids = upload(MANY, tmp_path)
    gets, lists = reads(own_emulator, "files.get"), reads(own_emulator, "files.list")
    events = wait_for_all(file_ids, emulator=own_emulator, held=file_ids)
    assert [event["status"] for event in events] == ["success"] * MANY
    assert [event["file"]["id"] for event in events] == file_ids  # each wait heard of its own file
    assert reads(own_emulator, "files.get") == gets  # no GET: every status came from a list
    assert 3 <= reads(own_emulator, "files.list") - lists <= 10  # polls at 0, 0.2, 0.4, 0.6 s, ...


def test_a_few_waits_are_read_one_by_one(own_emulator, tmp_path):
    file_ids = upload(3, tmp_path)
    lists = reads(own_emulator, "files.list")
    events = wait_for_all(file_ids)
    assert [event["status"] for event in events] == ["success"] * 3
    assert reads(own_emulator, "files.list") == lists
    assert reads(own_emulator, "files.get", set(file_ids)) >= 3


def test_a_file_the_list_does_not_show_is_asked_for_by_id(own_emulator, tmp_path):
    file_ids = upload(MANY, tmp_path)
    missing = "file-00000000000000000000000000000000"
    events = wait_for_all([*file_ids, missing], emulator=own_emulator, held=file_ids)
    assert [event["status"] for event in events] == ["success"] * MANY + ["error"]
    assert "404" in events[-1]["message"]
    assert reads(own_emulator, "files.get", {missing}) >= 1
    assert reads(own_emulator, "files.get", set(file_ids)) == 0


def test_a_file_failed_in_the_list_is_read_again_for_its_details(own_emulator, tmp_path):
    file_ids = upload(MANY, tmp_path)
    own_emulator.store.force_statuses(file_ids[0], ["error"], "Line 3: not a chat example")
    events = wait_for_all(file_ids)
    assert events[0]["status"] == "failed"
    assert events[0]["file"]["status_details"] == "Line 3: not a chat example"
    assert reads(own_emulator, "files.get", {file_ids[0]}) >= 1
    assert {event["status"] for event in events[1:]} == {"success"}


def test_a_list_that_fails_falls_back_to_one_read_per_file(own_emulator, tmp_path):
    file_ids = upload(MANY, tmp_path)
    own_emulator.faults.inject("files.list", status=500, count=1000)
    events = wait_for_all(file_ids)
    assert [event["status"] for event in events] == ["success"] * MANY
    assert reads(own_emulator, "files.get", set(file_ids)) >= MANY


def test_an_unusable_connection_answers_every_wait_with_an_error(monkeypatch):
    shared_clients.clear()
    set_connection(monkeypatch, "aoai_polling", host="ftp://nowhere", password=API_KEY)
    events = wait_for_all([f"file-{n}" for n in range(MANY)])
    assert {event["status"] for event in events} == {"error"}
    assert all("aoai_polling" in event["message"] for event in events)


def test_the_list_is_used_only_while_it_costs_less_than_the_gets():
    costs = polling._Costs(get_cpu=0.001)
    now = time.monotonic()
    assert not costs.use_list(polling.LIST_MIN_FILES - 1, now)  # too few files to be worth a list
    assert costs.use_list(polling.LIST_MIN_FILES, now)  # never measured: find out
    for cpu in (0.01, 0.01, 0.5, 0.01):  # one list met a garbage collection: the median decides
        costs.listed(cpu)
    assert costs.use_list(100, now)  # 100 GETs, 0.1 s, against a list of 0.01 s
    costs.listed(None)  # a list failed: no list until measured again
    assert not costs.use_list(10_000, now)
    assert costs.use_list(10_000, now + polling.LIST_RECHECK_SECONDS + 1)
    costs.listed(0.2)  # measured again after the failure: that figure alone counts
    assert costs.use_list(1_000, now) and not costs.use_list(100, now)
