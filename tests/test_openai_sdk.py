"""The official openai SDK works unchanged against the emulator (AzureOpenAI, and OpenAI on /openai/v1)."""

from __future__ import annotations

import hashlib
import io

import pytest

from tests.conftest import API_KEY, CHAT_LINE, jsonl

openai = pytest.importorskip("openai")


@pytest.fixture
def azure_client(emulator):
    return openai.AzureOpenAI(
        azure_endpoint=emulator.url, api_key=API_KEY, api_version="2024-10-21", max_retries=0
    )


def test_files_with_the_azure_client(azure_client):
    content = jsonl([CHAT_LINE] * 5)
    created = azure_client.files.create(file=("sdk.jsonl", io.BytesIO(content)), purpose="fine-tune")
    assert created.id.startswith("file-") and created.filename == "sdk.jsonl" and created.status == "pending"
    processed = azure_client.files.wait_for_processing(created.id, poll_interval=0.05, max_wait_seconds=10)
    assert processed.status == "processed"
    assert azure_client.files.retrieve(created.id).bytes == len(content)
    assert created.id in [f.id for f in azure_client.files.list(purpose="fine-tune")]
    assert azure_client.files.content(created.id).read() == content
    assert azure_client.files.delete(created.id).deleted is True


def test_uploads_with_the_azure_client(azure_client):
    content = jsonl([CHAT_LINE] * 40)
    middle = len(content) // 2
    upload = azure_client.uploads.create(
        bytes=len(content), filename="parts.jsonl", mime_type="text/jsonl", purpose="fine-tune"
    )
    assert upload.status == "pending"
    first = azure_client.uploads.parts.create(upload_id=upload.id, data=content[:middle])
    second = azure_client.uploads.parts.create(upload_id=upload.id, data=content[middle:])
    done = azure_client.uploads.complete(
        upload_id=upload.id, part_ids=[first.id, second.id], md5=hashlib.md5(content).hexdigest()
    )
    assert done.status == "completed" and done.file.bytes == len(content)
    assert (
        azure_client.files.wait_for_processing(done.file.id, poll_interval=0.05, max_wait_seconds=10).status
        == "processed"
    )


def test_errors_surface_as_sdk_exceptions(azure_client, emulator):
    with pytest.raises(openai.NotFoundError) as caught:
        azure_client.files.retrieve("file-missing")
    assert caught.value.status_code == 404
    bad_key = openai.AzureOpenAI(
        azure_endpoint=emulator.url, api_key="wrong-key", api_version="2024-10-21", max_retries=0
    )
    with pytest.raises(openai.AuthenticationError):
        bad_key.files.list()


def test_the_v1_surface_with_the_plain_client(emulator):
    client = openai.OpenAI(base_url=f"{emulator.url}/openai/v1", api_key=API_KEY, max_retries=0)
    content = jsonl([CHAT_LINE] * 3)
    created = client.files.create(file=("v1.jsonl", io.BytesIO(content)), purpose="fine-tune")
    assert (
        client.files.wait_for_processing(created.id, poll_interval=0.05, max_wait_seconds=10).status
        == "processed"
    )
    listed = client.files.list()
    assert created.id in [f.id for f in listed]
    upload = client.uploads.create(
        bytes=len(content), filename="v1-parts.jsonl", mime_type="text/jsonl", purpose="fine-tune"
    )
    part = client.uploads.parts.create(upload_id=upload.id, data=content)
    assert client.uploads.complete(upload_id=upload.id, part_ids=[part.id]).status == "completed"
    assert client.files.content(created.id).read() == content
