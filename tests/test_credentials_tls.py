"""Service principal and workload identity through real azure-identity, against the emulator in TLS mode.

azure-identity only talks to https authorities, so this emulator serves https with a self-signed
certificate that the tests trust through REQUESTS_CA_BUNDLE (which both requests and azure-core honour).
"""

from __future__ import annotations

import pytest

from airflow_provider_aoai.emulator import Emulator
from airflow_provider_aoai.exceptions import (
    AzureOpenAIConfigError,
    AzureOpenAIConnectionError,
    AzureOpenAICredentialError,
)
from airflow_provider_aoai.hooks import AzureOpenAIHook
from tests.conftest import set_connection

TENANT = "00000000-0000-0000-0000-0000000000aa"
CLIENT = "00000000-0000-0000-0000-0000000000bb"


@pytest.fixture(scope="module")
def tls_emulator():
    with Emulator(tls=True, processing_seconds=0.1) as emu:
        yield emu


@pytest.fixture
def trusted(tls_emulator, monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls_emulator.ca_cert_path))
    for name in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE", "IDENTITY_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    return tls_emulator


def test_client_secret(trusted, monkeypatch, chat_file):
    set_connection(
        monkeypatch,
        "aoai_sp",
        host=trusted.url,
        extra={
            "auth_type": "client_secret",
            "tenant_id": TENANT,
            "client_id": CLIENT,
            "client_secret": trusted.identity.client_secret,
            "authority_host": trusted.url,
        },
    )
    hook = AzureOpenAIHook(aoai_conn_id="aoai_sp")
    upload = hook.upload_multipart(source=chat_file, purpose="fine-tune")
    assert (
        hook.wait_for_file(file_id=upload["file"]["id"], poll_interval=0.05, timeout=10)["status"]
        == "processed"
    )
    assert type(hook.client.auth.credential).__name__ == "ClientSecretCredential"


def service_principal(url: str, **extra: str) -> dict:
    return {
        "auth_type": "client_secret",
        "tenant_id": TENANT,
        "client_id": CLIENT,
        "authority_host": url,
    } | extra


def test_the_client_secret_as_the_password(trusted, monkeypatch):
    """What the connection form saves: the secret in the password field (labelled so)."""
    secret = trusted.identity.client_secret
    set_connection(
        monkeypatch, "aoai_sp_pw", host=trusted.url, password=secret, extra=service_principal(trusted.url)
    )
    hook = AzureOpenAIHook(aoai_conn_id="aoai_sp_pw")
    assert hook.test_connection()[0]
    assert type(hook.client.auth.credential).__name__ == "ClientSecretCredential"


def test_a_client_secret_extra_takes_precedence_over_the_password(trusted, monkeypatch):
    """JSON and older connections keep working, also with a leftover api key in the password."""
    extra = service_principal(trusted.url, client_secret=trusted.identity.client_secret)
    set_connection(monkeypatch, "aoai_sp_both", host=trusted.url, password="an-old-api-key-0123", extra=extra)
    assert AzureOpenAIHook(aoai_conn_id="aoai_sp_both").test_connection()[0]


def test_a_wrong_client_secret_is_a_credential_error(trusted, monkeypatch):
    set_connection(
        monkeypatch,
        "aoai_sp_bad",
        host=trusted.url,
        extra={
            "auth_type": "client_secret",
            "tenant_id": TENANT,
            "client_id": CLIENT,
            "client_secret": "not-the-secret-0123456789",
            "authority_host": trusted.url,
        },
    )
    with pytest.raises(AzureOpenAICredentialError) as caught:
        AzureOpenAIHook(aoai_conn_id="aoai_sp_bad").list_files()
    assert "ClientSecretCredential" in str(caught.value) and "not-the-secret-0123456789" not in str(
        caught.value
    )


# The token file comes from the environment (AKS webhook), the connection, or its name before 0.2.
@pytest.mark.parametrize(
    "token_file_from", ["AZURE_FEDERATED_TOKEN_FILE", "federated_credential_file", "token_file_path"]
)
def test_workload_identity(trusted, monkeypatch, tmp_path, chat_file, token_file_from):
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text(trusted.identity.federated_token)
    extra = {
        "auth_type": "workload_identity",
        "tenant_id": TENANT,
        "client_id": CLIENT,
        "authority_host": trusted.url,
    }
    if token_file_from == "AZURE_FEDERATED_TOKEN_FILE":
        monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(token_file))
    else:
        extra[token_file_from] = str(token_file)
    set_connection(monkeypatch, "aoai_wi", host=trusted.project_url("agents"), extra=extra)
    hook = AzureOpenAIHook(aoai_conn_id="aoai_wi")
    file = hook.upload_file(source=chat_file, purpose="assistants")
    assert hook.get_file(file_id=file["id"])["id"] == file["id"]
    assert hook.client.auth.scope == "https://ai.azure.com/.default"


def test_tls_is_verified(tls_emulator, monkeypatch):
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    set_connection(monkeypatch, "aoai_untrusted", host=tls_emulator.url, password="any-key-will-do")
    with pytest.raises(AzureOpenAIConnectionError, match="TLS failed"):
        AzureOpenAIHook(aoai_conn_id="aoai_untrusted").list_files()


@pytest.mark.parametrize("bundle", ["missing", "not PEM"])
def test_a_ca_bundle_that_cannot_be_read_is_a_config_error(tls_emulator, monkeypatch, tmp_path, bundle):
    """REQUESTS_CA_BUNDLE naming a missing file, or a file with no certificate in it: a config error naming
    the bundle, before any request (it was a raw FileNotFoundError / ssl.SSLError)."""
    path = tmp_path / "ca.pem"
    if bundle == "not PEM":
        path.write_text("not a certificate\n")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(path))
    set_connection(monkeypatch, "aoai_bad_bundle", host=tls_emulator.url, password="any-key-will-do")
    hook = AzureOpenAIHook(aoai_conn_id="aoai_bad_bundle")
    with pytest.raises(AzureOpenAIConfigError, match=f"The CA bundle '{path}'.*cannot be used"):
        hook.list_files()
    ok, message = hook.test_connection()
    assert not ok and "CA bundle" in message
