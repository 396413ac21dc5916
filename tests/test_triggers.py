"""AzureOpenAIFileStatusTrigger: one event per run, never blocking the loop, serialize() round-trips."""

from __future__ import annotations

import asyncio
import time

import pytest

from airflow_provider_aoai.exceptions import (
    AzureOpenAIError,
    AzureOpenAIFileProcessingError,
    AzureOpenAIWaitTimeoutError,
)
from airflow_provider_aoai.triggers import AzureOpenAIFileStatusTrigger, file_from_event


def run_trigger(trigger) -> list[dict]:
    async def collect():
        return [event.payload async for event in trigger.run()]

    return asyncio.run(collect())


def make(file_id, *, timeout=10.0, poll=0.05):
    return AzureOpenAIFileStatusTrigger(
        file_id=file_id, aoai_conn_id="aoai_default", poll_interval=poll, end_time=time.time() + timeout
    )


def test_serialize_round_trips():
    trigger = make("file-1")
    path, kwargs = trigger.serialize()
    module, _, name = path.rpartition(".")
    rebuilt = getattr(__import__(module, fromlist=[name]), name)(**kwargs)
    assert rebuilt.serialize() == (path, kwargs)
    assert path == "airflow_provider_aoai.triggers.AzureOpenAIFileStatusTrigger"


def test_success_is_one_event(hook, chat_file):
    file = hook.upload_file(source=chat_file, purpose="fine-tune")
    events = run_trigger(make(file["id"]))
    assert len(events) == 1 and events[0]["status"] == "success"
    assert file_from_event(events[0])["status"] == "processed"


def test_failure_is_told_apart_from_timeout(hook, emulator, chat_file):
    failing = hook.upload_file(source=chat_file, purpose="fine-tune")
    emulator.store.force_statuses(failing["id"], ["running", "error"], "Line 7: broken")
    [failed] = run_trigger(make(failing["id"]))
    assert failed["status"] == "failed"
    with pytest.raises(AzureOpenAIFileProcessingError, match="Line 7: broken"):
        file_from_event(failed)

    slow = hook.upload_file(source=chat_file, purpose="fine-tune")
    emulator.store.force_statuses(slow["id"], ["running"])
    [timed_out] = run_trigger(make(slow["id"], timeout=0.2))
    assert timed_out["status"] == "timeout"
    with pytest.raises(AzureOpenAIWaitTimeoutError):
        file_from_event(timed_out)


def test_service_errors_end_the_trigger_with_an_error_event(aoai_conn):
    [event] = run_trigger(make("file-does-not-exist"))
    assert event["status"] == "error" and "404" in event["message"]
    with pytest.raises(AzureOpenAIError):
        file_from_event(event)


@pytest.mark.parametrize(
    "event", [None, {}, {"status": "success"}, {"status": "party", "file": {}}, "success"]
)
def test_malformed_events_are_rejected(event):
    with pytest.raises(AzureOpenAIError):
        file_from_event(event)


def test_the_event_loop_keeps_running_while_the_service_is_slow(hook, emulator, chat_file):
    file = hook.upload_file(source=chat_file, purpose="fine-tune")
    emulator.faults.inject("files.get", delay_seconds=0.5)
    ticks = 0

    async def main():
        nonlocal ticks
        task = asyncio.ensure_future(anext(make(file["id"]).run()))
        while not task.done():
            ticks += 1
            await asyncio.sleep(0.01)
        return task.result()

    event = asyncio.run(main())
    assert event.payload["file_id"] == file["id"]
    assert ticks >= 10  # the loop ran other work during the 0.5 s request
