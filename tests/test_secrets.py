"""No api key, token or SAS signature in logs, exception messages or return values."""

from __future__ import annotations

import json

import pytest

from airflow_provider_aoai.exceptions import AzureOpenAIError
from airflow_provider_aoai.hooks import AzureOpenAIHook
from tests.conftest import API_KEY, CHAT_LINE, jsonl, set_connection

SIGNATURE = "sv=2024-05-04&sr=b&sp=r&sig=Zm9vYmFyc2VjcmV0c2lnbmF0dXJlJTNE"


def our_logs(caplog) -> str:
    """Log lines of this process, less those of the emulator's own threads (they play the service)."""
    return "\n".join(r.getMessage() for r in caplog.records if not r.threadName.startswith("aoai-emulator"))


def redacted(value: str) -> str:
    from airflow.providers.common.compat.sdk import redact

    return redact(value)


def test_api_key_is_masked_and_never_printed(hook, emulator, chat_file, capfd, caplog):
    caplog.set_level("DEBUG")
    upload = hook.upload_multipart(source=chat_file, purpose="fine-tune")
    emulator.faults.inject("files.list", status=429, retry_after_ms=1, count=10)
    with pytest.raises(AzureOpenAIError) as caught:
        hook.list_files()
    output = capfd.readouterr()
    everything = (
        output.out
        + output.err
        + our_logs(caplog)
        + str(caught.value)
        + repr(caught.value)
        + json.dumps(upload)
    )
    assert API_KEY not in everything
    assert API_KEY not in repr(hook.client.auth)
    assert redacted(API_KEY) != API_KEY  # registered with Airflow's secrets masker


def test_sas_signature_is_masked_and_kept_out_of_messages(hook, emulator, capfd, caplog):
    caplog.set_level("DEBUG")
    emulator.put_blob("sas.jsonl", jsonl([CHAT_LINE]))
    url = emulator.blob_url("sas.jsonl", sas=SIGNATURE)
    file = hook.import_file(content_url=url, filename="sas.jsonl", purpose="fine-tune")
    missing = hook.import_file(
        content_url=emulator.blob_url("nope.jsonl", sas=SIGNATURE), filename="n.jsonl", purpose="fine-tune"
    )
    with pytest.raises(AzureOpenAIError) as caught:
        hook.wait_for_file(file_id=missing["id"], poll_interval=0.05, timeout=10)
    with pytest.raises(AzureOpenAIError) as bad_url:
        hook.import_file(content_url=f"ftp://example.com/x?{SIGNATURE}", filename="x", purpose="fine-tune")
    output = capfd.readouterr()
    everything = (
        output.out
        + output.err
        + our_logs(caplog)
        + str(caught.value)
        + str(bad_url.value)
        + json.dumps([file, missing])
    )
    assert "Zm9vYmFyc2VjcmV0c2lnbmF0dXJlJTNE" not in everything
    assert redacted(url) != url


def test_tokens_never_appear_in_logs(emulator, monkeypatch, chat_file, capfd, caplog):
    caplog.set_level("DEBUG")
    for name, value in emulator.managed_identity_env().items():
        monkeypatch.setenv(name, value)
    set_connection(monkeypatch, "aoai_tok", host=emulator.url, extra={"auth_type": "managed_identity"})
    hook = AzureOpenAIHook(aoai_conn_id="aoai_tok")
    hook.upload_file(source=chat_file, purpose="fine-tune")
    output = capfd.readouterr()
    tokens = list(emulator.identity.tokens)
    assert tokens
    for token in tokens:
        assert token not in output.out + output.err + our_logs(caplog)
    assert emulator.identity.header_secret not in output.out + output.err + our_logs(caplog)


def test_client_secret_is_masked(monkeypatch):
    secret = "client-secret-value-0123456789"
    set_connection(
        monkeypatch,
        "aoai_sp",
        host="https://x.openai.azure.com",
        extra={"auth_type": "client_secret", "tenant_id": "t", "client_id": "c", "client_secret": secret},
    )
    client = AzureOpenAIHook(aoai_conn_id="aoai_sp").client
    assert secret not in repr(client.auth)
    assert redacted(secret) != secret
