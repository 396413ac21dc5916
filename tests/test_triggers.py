"""AzureOpenAIFileStatusTrigger: one event per run, never blocking the loop, serialize() round-trips; all the
triggers of a process share one client per connection."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time

import psutil
import pytest

from airflow_provider_aoai.exceptions import (
    AzureOpenAIConfigError,
    AzureOpenAIError,
    AzureOpenAIFileProcessingError,
    AzureOpenAIWaitTimeoutError,
)
from airflow_provider_aoai.shared_clients import SharedClients, shared_clients
from airflow_provider_aoai.triggers import AzureOpenAIFileStatusTrigger, file_from_event
from tests.conftest import API_KEY, REPO, set_connection


@pytest.fixture(autouse=True)
def _fresh_shared_clients():
    """Each test starts without shared clients (the process-wide cache outlives a test's connection)."""
    shared_clients.clear()
    yield
    shared_clients.clear()


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


def client_sockets(port: int, ignore: frozenset[int] = frozenset()) -> int:
    """Open TCP sockets of this process connected to ``port`` (the emulator's, so the client side only),
    leaving out those whose local port is in ``ignore`` (opened by earlier tests' hooks)."""
    return len(_client_ports(port) - ignore)


def _client_ports(port: int) -> frozenset[int]:
    return frozenset(
        c.laddr.port
        for c in psutil.Process().net_connections(kind="tcp")
        if c.raddr and c.raddr.port == port and c.status != psutil.CONN_TIME_WAIT
    )


def test_a_thousand_triggers_share_a_handful_of_sockets(hook, emulator, chat_file, capfd):
    files = [hook.upload_file(source=chat_file, purpose="fine-tune")["id"] for _ in range(20)]
    for file_id in files:  # every file is seen running once per trigger on it, then processed
        emulator.store.force_statuses(file_id, ["running"] * 50 + ["processed"])
    triggers = [make(files[n % len(files)], timeout=120, poll=0.2) for n in range(1000)]
    polls_before = len(emulator.faults.calls("files.get"))
    earlier = _client_ports(emulator.port)
    peak = 0
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, client_sockets(emulator.port, earlier))
            done.wait(0.05)

    async def main():
        runs = [trigger.run() for trigger in triggers]
        events = await asyncio.gather(*(anext(run) for run in runs))
        still_open = client_sockets(emulator.port, earlier)  # every trigger is still alive here
        for run in runs:
            await run.aclose()
        return events, still_open

    watcher = threading.Thread(target=watch)
    capfd.readouterr()
    watcher.start()
    try:
        events, still_open = asyncio.run(main())
    finally:
        done.set()
        watcher.join()
    assert [e.payload["status"] for e in events] == ["success"] * 1000
    assert len(emulator.faults.calls("files.get")) - polls_before >= 2000  # each polled at least twice
    assert max(peak, still_open) <= 16, f"{max(peak, still_open)} sockets open for 1,000 triggers"
    printed = capfd.readouterr()
    assert not any(f in printed.out + printed.err for f in files)  # polls log at debug, shown by default


def test_triggers_fetch_one_token_for_all(emulator, monkeypatch, chat_file, hook):
    for name, value in emulator.managed_identity_env().items():
        monkeypatch.setenv(name, value)
    for name in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_FEDERATED_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    set_connection(monkeypatch, "aoai_mi", host=emulator.url, extra={"auth_type": "managed_identity"})
    file_id = hook.upload_file(source=chat_file, purpose="fine-tune")["id"]
    hook.wait_for_file(file_id=file_id, poll_interval=0.05, timeout=10)
    issued = emulator.identity.issued
    triggers = [
        AzureOpenAIFileStatusTrigger(
            file_id=file_id, aoai_conn_id="aoai_mi", poll_interval=0.05, end_time=time.time() + 60
        )
        for _ in range(100)
    ]

    async def main():
        return await asyncio.gather(*(anext(t.run()) for t in triggers))

    assert {e.payload["status"] for e in asyncio.run(main())} == {"success"}
    assert emulator.identity.issued == issued + 1


NO_BLOCKING_ON_THE_LOOP = r"""
import asyncio, json, sys, threading, time
from airflow_provider_aoai.triggers import AzureOpenAIFileStatusTrigger

loop_thread, recording, seen = threading.get_ident(), False, []

def audit(event, args):
    watched = event.split(".")[0] in ("import", "open", "socket")
    if recording and threading.get_ident() == loop_thread and watched:
        seen.append(f"{event} {str(args[0])[:100]}")

sys.addaudithook(audit)

async def main():
    global recording
    recording = True
    trigger = AzureOpenAIFileStatusTrigger(
        file_id=sys.argv[1], aoai_conn_id="aoai_default", poll_interval=0.05, end_time=time.time() + 30
    )
    event = await anext(trigger.run())
    recording = False
    return event.payload["status"]

print(json.dumps({"status": asyncio.run(main()), "on_the_loop": seen}))
"""


def test_the_first_poll_imports_and_blocks_nothing_on_the_event_loop(hook, chat_file):
    """The first run reads the connection and imports the HTTP stack: in a worker thread, not on the loop."""
    file_id = hook.upload_file(source=chat_file, purpose="fine-tune")["id"]
    result = subprocess.run(
        [sys.executable, "-c", NO_BLOCKING_ON_THE_LOOP, file_id],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["status"] == "success"
    assert report["on_the_loop"] == []


def test_one_client_per_connection_rebuilt_when_the_connection_changes(emulator, monkeypatch):
    clients = SharedClients(recheck_seconds=0)
    set_connection(monkeypatch, "aoai_shared", host=emulator.url, password=API_KEY)
    first = clients.hook("aoai_shared")
    assert clients.hook("aoai_shared").client is first.client  # read again, unchanged: the same client

    set_connection(monkeypatch, "aoai_shared", host=emulator.url, password=API_KEY, extra={"timeout": 7})
    second = clients.hook("aoai_shared")
    assert second.client is not first.client and second.client.timeout == 7
    assert clients.hook("aoai_shared").client is second.client

    set_connection(monkeypatch, "aoai_shared", host=emulator.url, password="another-key-0123456789")
    assert clients.hook("aoai_shared").client.auth.headers() == {"api-key": "another-key-0123456789"}

    set_connection(monkeypatch, "aoai_shared", host="ftp://nowhere", password=API_KEY)
    with pytest.raises(AzureOpenAIConfigError, match="aoai_shared"):
        clients.hook("aoai_shared")


def test_a_change_is_noticed_only_after_the_recheck_interval(emulator, monkeypatch):
    clients = SharedClients(recheck_seconds=3600)
    set_connection(monkeypatch, "aoai_shared", host=emulator.url, password=API_KEY)
    first = clients.hook("aoai_shared")
    set_connection(monkeypatch, "aoai_shared", host=emulator.url, password=API_KEY, extra={"timeout": 7})
    assert clients.hook("aoai_shared").client is first.client  # the connection is not read on every poll
    clients.recheck_seconds = 0
    assert clients.hook("aoai_shared").client.timeout == 7


def test_concurrent_first_calls_build_one_client(emulator, monkeypatch):
    clients = SharedClients()
    set_connection(monkeypatch, "aoai_shared", host=emulator.url, password=API_KEY)
    barrier = threading.Barrier(32)
    built = []

    def first_call() -> None:
        barrier.wait()
        built.append(clients.hook("aoai_shared").client)

    threads = [threading.Thread(target=first_call) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(built) == 32 and len({id(client) for client in built}) == 1
