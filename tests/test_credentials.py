"""Entra ID auth with the real azure-identity library against the emulator's managed-identity endpoint."""

from __future__ import annotations

import pytest

from airflow_provider_aoai.hooks import AzureOpenAIHook
from tests.conftest import set_connection


@pytest.fixture
def managed_identity(emulator, monkeypatch):
    for name in (
        "AZURE_CLIENT_ID",
        "AZURE_TENANT_ID",
        "AZURE_CLIENT_SECRET",
        "AZURE_FEDERATED_TOKEN_FILE",
        "MSI_ENDPOINT",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in emulator.managed_identity_env().items():
        monkeypatch.setenv(name, value)
    return emulator


def bearer_requests(emulator):
    return [r for r in emulator.faults.requests if r.operation]


@pytest.mark.parametrize("auth_type", ["managed_identity", "default"])
def test_entra_id_on_the_data_plane(managed_identity, monkeypatch, chat_file, auth_type):
    emulator = managed_identity
    set_connection(monkeypatch, "aoai_mi", host=emulator.url, extra={"auth_type": auth_type})
    hook = AzureOpenAIHook(aoai_conn_id="aoai_mi")
    issued = emulator.identity.issued
    upload = hook.upload_multipart(source=chat_file, purpose="fine-tune")
    assert upload["status"] == "completed"
    assert hook.get_file(file_id=upload["file"]["id"])["id"] == upload["file"]["id"]
    assert hook.client.auth.scope == "https://cognitiveservices.azure.com/.default"
    assert emulator.identity.issued == issued + 1  # one token, cached across all requests and threads


def test_entra_id_on_a_foundry_project(managed_identity, monkeypatch, chat_file):
    emulator = managed_identity
    set_connection(
        monkeypatch,
        "aoai_foundry",
        host=emulator.project_url("proj"),
        extra={"auth_type": "managed_identity"},
    )
    hook = AzureOpenAIHook(aoai_conn_id="aoai_foundry")
    assert hook.surface.value == "foundry" and hook.client.auth.scope == "https://ai.azure.com/.default"
    file = hook.upload_file(source=chat_file, purpose="assistants", filename="agent-notes.jsonl")
    assert file["filename"] == "agent-notes.jsonl"
    assert hook.wait_for_file(file_id=file["id"], poll_interval=0.05, timeout=10)["status"] == "processed"
    assert emulator.faults.requests[-1].path == f"/api/projects/proj/files/{file['id']}"
    assert hook.test_connection()[0]


@pytest.mark.parametrize("scope_field", ["scope", "token_scope"])  # token_scope: its name before 0.2
def test_a_token_for_the_wrong_audience_is_refused(managed_identity, monkeypatch, scope_field):
    emulator = managed_identity
    set_connection(
        monkeypatch,
        "aoai_scope",
        host=emulator.url,
        extra={"auth_type": "managed_identity", scope_field: "https://ai.azure.com/.default"},
    )
    ok, message = AzureOpenAIHook(aoai_conn_id="aoai_scope").test_connection()
    assert not ok and "401" in message and "audience" in message


def test_tokens_are_refreshed_before_they_expire(emulator, monkeypatch):
    from airflow_provider_aoai.emulator import Emulator

    # Tokens that live 60 s are inside the 5-minute refresh margin: every request must fetch a new one.
    with Emulator(token_lifetime_seconds=60) as short:
        for name, value in short.managed_identity_env().items():
            monkeypatch.setenv(name, value)
        set_connection(monkeypatch, "aoai_short", host=short.url, extra={"auth_type": "managed_identity"})
        hook = AzureOpenAIHook(aoai_conn_id="aoai_short")
        hook.list_files()
        first = short.identity.issued
        hook.list_files()
        assert short.identity.issued == first + 1


def test_a_foundry_connection_refuses_import_and_uploads_without_a_request(
    managed_identity, monkeypatch, chat_file
):
    from airflow_provider_aoai.exceptions import AzureOpenAIUnsupportedOperationError

    emulator = managed_identity
    set_connection(
        monkeypatch,
        "aoai_foundry2",
        host=emulator.project_url("proj"),
        extra={"auth_type": "managed_identity"},
    )
    hook = AzureOpenAIHook(aoai_conn_id="aoai_foundry2")
    before = len(emulator.faults.requests)
    calls = [
        lambda: hook.import_file(content_url="https://h/a.jsonl", filename="a.jsonl", purpose="fine-tune"),
        lambda: hook.create_upload(
            filename="a.jsonl", purpose="fine-tune", total_bytes=10, mime_type="text/jsonl"
        ),
        lambda: hook.upload_multipart(source=chat_file, purpose="fine-tune"),
        lambda: hook.cancel_upload(upload_id="u1"),
    ]
    for call in calls:
        with pytest.raises(AzureOpenAIUnsupportedOperationError, match="foundry"):
            call()
    assert len(emulator.faults.requests) == before


@pytest.mark.parametrize(
    "key", ["CANARY-key-0123456789\n", " CANARY-key-0123456789", "CANARY-key\r\nX-Evil: 1", "CANARY-kéy-0123"]
)
def test_an_api_key_a_header_cannot_carry_is_refused_without_showing_it(emulator, monkeypatch, key):
    """A key pasted with a line break (a secrets file's last line) or an odd character: http.client refused
    it with a ValueError that quoted the key. Now the connection is refused before any request."""
    from airflow_provider_aoai.exceptions import AzureOpenAIConfigError

    set_connection(monkeypatch, "aoai_pasted", host=emulator.url, password=key)
    hook = AzureOpenAIHook(aoai_conn_id="aoai_pasted")
    with pytest.raises(AzureOpenAIConfigError, match="'aoai_pasted': password: the api key has") as caught:
        hook.get_file(file_id="file-1")
    ok, message = hook.test_connection()
    assert not ok
    for text in (str(caught.value), repr(caught.value), message):
        assert "CANARY" not in text and "0123" not in text
