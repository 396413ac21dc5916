"""A Foundry project's OpenAI-compatible files route (``{project}/openai/files``, api-version
2025-11-15-preview) through the hook, the operators, the sensor and the trigger, over real HTTP to the
emulator, with tokens from the real azure-identity (managed identity, served by the emulator)."""

from __future__ import annotations

import asyncio
import io
import time

import pytest

from airflow_provider_aoai.exceptions import (
    AzureOpenAIConfigError,
    AzureOpenAIInvalidArgumentError,
    AzureOpenAIUnsupportedOperationError,
)
from airflow_provider_aoai.hooks import AzureOpenAIHook
from airflow_provider_aoai.http.endpoint import FOUNDRY_OPENAI_API_VERSION
from airflow_provider_aoai.models import Surface
from airflow_provider_aoai.operators import AzureOpenAIUploadFileOperator
from airflow_provider_aoai.sensors import AzureOpenAIFileStatusSensor
from airflow_provider_aoai.shared_clients import shared_clients
from airflow_provider_aoai.triggers import AzureOpenAIFileStatusTrigger
from tests.conftest import API_KEY, CHAT_LINE, jsonl, set_connection

CONN_ID = "aoai_project_openai"


@pytest.fixture(params=["extra", "endpoint"])
def route(request, emulator, monkeypatch):
    """A connection to the route: by the ``foundry_route`` extra, or by an endpoint ending in /openai."""
    for name, value in emulator.managed_identity_env().items():
        monkeypatch.setenv(name, value)
    extra = {"auth_type": "managed_identity"}
    host = emulator.project_url("demo")
    if request.param == "extra":
        extra["foundry_route"] = "openai"
    else:
        host += "/openai"
    set_connection(monkeypatch, CONN_ID, host=host, extra=extra)
    shared_clients.clear()
    yield AzureOpenAIHook(aoai_conn_id=CONN_ID)
    shared_clients.clear()


def served(emulator) -> list:
    return [r for r in emulator.faults.requests if r.operation]


def test_the_connection_reaches_the_route_with_its_api_version(route, emulator):
    assert route.client.surface is Surface.FOUNDRY_OPENAI
    assert route.client.api_version == FOUNDRY_OPENAI_API_VERSION
    before = len(served(emulator))
    route.list_files()
    listed = [r for r in served(emulator)[before:] if r.operation == "files.list"]
    # one request per page: the session's emulator may hold more than one page of files by now
    assert listed and {r.path for r in listed} == {"/api/projects/demo/openai/files"}


def test_upload_get_list_download_wait_and_delete(route, emulator, tmp_path):
    dataset = tmp_path / "training.jsonl"
    dataset.write_bytes(jsonl([CHAT_LINE] * 10))
    file = route.upload_file(source=str(dataset), purpose="fine-tune", validate=True)
    assert file["id"].startswith("file-") and file["purpose"] == "fine-tune"
    assert route.get_file(file_id=file["id"])["id"] == file["id"]
    assert file["id"] in {f["id"] for f in route.list_files(purpose="fine-tune")}
    done = route.wait_for_file(file_id=file["id"], poll_interval=0.05, timeout=30)
    assert done["status"] == "processed"
    target = tmp_path / "back.jsonl"
    route.download_file(file_id=file["id"], destination=str(target))
    assert target.read_bytes() == dataset.read_bytes()
    assert route.delete_file(file_id=file["id"])["deleted"] is True
    assert file["id"] not in {f["id"] for f in route.list_files()}


def test_the_list_follows_every_page(route, emulator):
    """The route answers 20 files a page, newest first (as recorded); the hook reads every page."""
    ids = {
        route.upload_file(source=io.BytesIO(b"note %d" % n), purpose="assistants", filename=f"n{n}.txt")["id"]
        for n in range(23)
    }
    before = len(served(emulator))
    listed = {f["id"] for f in route.list_files(purpose="assistants")}
    assert ids <= listed
    assert len(served(emulator)) - before >= 2  # more than one page was read


def test_expires_after_is_sent_and_answered(route):
    file = route.upload_file(source=io.BytesIO(b"kept an hour"), purpose="assistants", expires_after=3600)
    assert file["expires_at"] == file["created_at"] + 3600


@pytest.mark.parametrize(
    ("operation", "call"),
    [
        (
            "import_file",
            lambda hook: hook.import_file(
                content_url="https://x.blob.core.windows.net/c/a.jsonl",
                filename="a.jsonl",
                purpose="fine-tune",
            ),
        ),
        (
            "create_upload",
            lambda hook: hook.create_upload(
                filename="a.jsonl", purpose="fine-tune", total_bytes=10, mime_type="text/jsonl"
            ),
        ),
        (
            "upload_multipart",
            lambda hook: hook.upload_multipart(
                source=io.BytesIO(b"{}\n"), purpose="assistants", filename="a.jsonl"
            ),
        ),
        ("cancel_upload", lambda hook: hook.cancel_upload(upload_id="upload-1")),
    ],
)
def test_uploads_and_import_are_refused_before_any_request_saying_where_they_are(
    route, emulator, operation, call
):
    before = len(served(emulator))
    with pytest.raises(AzureOpenAIUnsupportedOperationError) as caught:
        call(route)
    assert operation in str(caught.value) and "resource endpoint" in str(caught.value)
    assert CONN_ID in str(caught.value)
    assert len(served(emulator)) == before


def test_an_api_key_is_refused_before_any_request(emulator, monkeypatch):
    set_connection(monkeypatch, CONN_ID, host=emulator.project_url("demo") + "/openai", password=API_KEY)
    before = len(emulator.faults.requests)
    with pytest.raises(AzureOpenAIConfigError, match="Entra ID"):
        AzureOpenAIHook(aoai_conn_id=CONN_ID).list_files()
    assert len(emulator.faults.requests) == before


def test_an_unknown_route_is_refused(emulator, monkeypatch):
    set_connection(
        monkeypatch,
        CONN_ID,
        host=emulator.project_url("demo"),
        extra={"auth_type": "managed_identity", "foundry_route": "files"},
    )
    with pytest.raises(AzureOpenAIConfigError, match="foundry_route"):
        AzureOpenAIHook(aoai_conn_id=CONN_ID).list_files()


def test_the_operator_the_sensor_and_the_trigger_on_the_route(route, emulator, tmp_path):
    source = tmp_path / "handbook.txt"
    source.write_bytes(b"Be kind.\n")
    operator = AzureOpenAIUploadFileOperator(
        task_id="upload", aoai_conn_id=CONN_ID, source=str(source), purpose="assistants"
    )
    file = operator.execute({})
    assert file["id"].startswith("assistant-")
    sensor = AzureOpenAIFileStatusSensor(task_id="wait", aoai_conn_id=CONN_ID, file_id=file["id"])
    assert sensor.poke({}).is_done

    dataset = tmp_path / "training.jsonl"
    dataset.write_bytes(jsonl([CHAT_LINE] * 10))
    pending = route.upload_file(source=str(dataset), purpose="fine-tune")
    trigger = AzureOpenAIFileStatusTrigger(
        file_id=pending["id"], aoai_conn_id=CONN_ID, poll_interval=0.05, end_time=time.time() + 30
    )

    async def first_event():
        async for event in trigger.run():
            return event.payload

    event = asyncio.run(first_event())
    assert event["status"] == "success" and event["file"]["status"] == "processed"


def test_an_id_the_service_never_mints_is_refused_on_the_route_too(route, emulator):
    before = len(served(emulator))
    with pytest.raises(AzureOpenAIInvalidArgumentError) as caught:
        route.get_file(file_id="assistant-../../files")
    assert caught.value.argument == "file_id"
    assert len(served(emulator)) == before
