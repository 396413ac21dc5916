"""Token acquisition failures (README "By error code": AzureOpenAICredentialError "azure-identity could not
get a token (bad secret, no managed identity here, token file missing)"). The managed identity endpoint is a
real HTTP server that misbehaves; the workload identity token file is missing."""

from __future__ import annotations

import json

import pytest

from airflow_provider_aoai.exceptions import AzureOpenAICredentialError
from tests.adversarial.helpers import requests_served
from tests.conftest import set_connection
from tests.misbehaving import Answer, MisbehavingService


def _hook(conn_id: str):
    from airflow_provider_aoai.hooks import AzureOpenAIHook

    return AzureOpenAIHook(aoai_conn_id=conn_id)


@pytest.mark.parametrize(
    "answer",
    [
        Answer(status=500, body=b"<html>identity endpoint down</html>", content_type="text/html"),
        Answer(status=200, body=b"not json"),
        Answer(
            status=200,
            body=json.dumps(
                {"access_token": "tok-adv", "expires_on": "soon", "token_type": "Bearer", "resource": "x"}
            ).encode(),
        ),
    ],
    ids=[
        "500 html (raw JSONDecodeError)",
        "200 not json (raw azure DecodeError)",
        "expires_on not a number (raw ValueError)",
    ],
)
def test_a_misbehaving_managed_identity_endpoint_is_a_credential_error(emulator, monkeypatch, answer):
    """FINDING: TokenAuth catches only ClientAuthenticationError; anything else azure-identity raises escapes
    raw from every hook method (and from the trigger, which only handles AzureOpenAIError)."""
    with MisbehavingService() as identity:
        identity.answer = answer
        monkeypatch.setenv("IDENTITY_ENDPOINT", f"{identity.url}/msi/token")
        monkeypatch.setenv("IDENTITY_HEADER", "adv-header")
        set_connection(
            monkeypatch,
            "adv_mi",
            host=emulator.url,
            extra={"auth_type": "managed_identity", "max_retries": 0},
        )
        before = requests_served(emulator)
        with pytest.raises(AzureOpenAICredentialError):
            _hook("adv_mi").get_file(file_id="file-x")
        assert requests_served(emulator) == before


def test_an_unreachable_managed_identity_endpoint_is_a_credential_error(emulator, monkeypatch):
    """FINDING: IDENTITY_ENDPOINT refuses connections: azure.core.exceptions.ServiceRequestError escapes."""
    monkeypatch.setenv("IDENTITY_ENDPOINT", "http://127.0.0.1:1/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", "adv-header")
    set_connection(
        monkeypatch,
        "adv_mi_down",
        host=emulator.url,
        extra={"auth_type": "managed_identity", "max_retries": 0},
    )
    with pytest.raises(AzureOpenAICredentialError):
        _hook("adv_mi_down").get_file(file_id="file-x")


def test_a_missing_federated_token_file_is_a_credential_error(emulator, monkeypatch, tmp_path):
    """FINDING + DOC MISMATCH: the README's troubleshooting table promises AzureOpenAICredentialError for a
    missing token file; a raw FileNotFoundError escapes (test_connection reports "FileNotFoundError: ...")."""
    set_connection(
        monkeypatch,
        "adv_wi",
        host=emulator.url,
        extra={
            "auth_type": "workload_identity",
            "tenant_id": "adv-tenant",
            "client_id": "adv-client",
            "federated_credential_file": str(tmp_path / "missing-token"),
            "max_retries": 0,
        },
    )
    with pytest.raises(AzureOpenAICredentialError):
        _hook("adv_wi").get_file(file_id="file-x")


def test_held_test_connection_never_raises_on_credential_trouble(emulator, monkeypatch, tmp_path):
    set_connection(
        monkeypatch,
        "adv_wi_tc",
        host=emulator.url,
        extra={
            "auth_type": "workload_identity",
            "tenant_id": "adv-tenant",
            "client_id": "adv-client",
            "federated_credential_file": str(tmp_path / "missing-token"),
            "max_retries": 0,
        },
    )
    ok, message = _hook("adv_wi_tc").test_connection()
    assert not ok and message
