"""The official openai SDK works unchanged against the emulator: AzureOpenAI, OpenAI on /openai/v1, and OpenAI
on a Foundry project's OpenAI route as azure-ai-projects 2.x configures it."""

from __future__ import annotations

import hashlib
import io
import math

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


# ------------------------------------------------------------------------------ a project's OpenAI route
@pytest.fixture
def project_client(emulator, monkeypatch):
    """As azure-ai-projects 2.x's ``get_openai_client()`` builds it: ``OpenAI(base_url=<project>/openai,
    api_key=get_bearer_token_provider(credential, "https://ai.azure.com/.default"),
    default_query={"api-version": "2025-11-15-preview"})``; the credential is azure-identity's managed
    identity, served by the emulator."""
    identity = pytest.importorskip("azure.identity")
    for name in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_FEDERATED_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in emulator.managed_identity_env().items():
        monkeypatch.setenv(name, value)
    tokens = identity.get_bearer_token_provider(
        identity.ManagedIdentityCredential(), "https://ai.azure.com/.default"
    )
    with openai.OpenAI(
        base_url=f"{emulator.project_url('demo')}/openai",
        api_key=tokens,
        default_query={"api-version": "2025-11-15-preview"},
        max_retries=0,
    ) as client:
        yield client


def test_files_on_a_projects_openai_route(project_client, emulator):
    content = jsonl([CHAT_LINE] * 4)
    created = project_client.files.create(file=("project.jsonl", io.BytesIO(content)), purpose="fine-tune")
    assert created.id.startswith("file-") and created.status == "pending"
    processed = project_client.files.wait_for_processing(created.id, poll_interval=0.05, max_wait_seconds=10)
    assert processed.status == "processed"
    retrieved = project_client.files.retrieve(created.id)
    assert (retrieved.bytes, retrieved.filename, retrieved.purpose) == (
        len(content),
        "project.jsonl",
        "fine-tune",
    )
    assert project_client.files.content(created.id).read() == content

    expiring = project_client.files.create(
        file=("notes.txt", io.BytesIO(b"notes")),
        purpose="assistants",
        expires_after={"anchor": "created_at", "seconds": 3600},
    )
    assert expiring.id.startswith("assistant-") and expiring.status == "processed"
    assert expiring.expires_at == expiring.created_at + 3600

    pages_before = len(emulator.faults.calls("files.list"))
    listed = [file.id for file in project_client.files.list(limit=2)]  # auto-paging through has_more
    assert {created.id, expiring.id} <= set(listed) and len(listed) == len(set(listed))
    assert len(emulator.faults.calls("files.list")) - pages_before == math.ceil(len(listed) / 2)
    assert listed.index(expiring.id) < listed.index(created.id)  # newest first

    assert project_client.files.delete(created.id).deleted is True
    assert project_client.files.delete(created.id).deleted is False  # a file- id deleted twice
    assert project_client.files.delete(expiring.id).deleted is True
    with pytest.raises(openai.NotFoundError) as caught:
        project_client.files.delete(expiring.id)  # an assistant- id deleted twice
    assert caught.value.body["message"] == f"No such File object: {expiring.id}"


def test_a_project_route_refuses_an_api_key(emulator):
    client = openai.OpenAI(
        base_url=f"{emulator.project_url('demo')}/openai",
        api_key=API_KEY,
        default_query={"api-version": "2025-11-15-preview"},
        max_retries=0,
    )
    with pytest.raises(openai.AuthenticationError):
        client.files.list()
