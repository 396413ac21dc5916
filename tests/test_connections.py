"""How an ``aoai`` connection can be written (JSON, URI, the UI form) and read back, on Airflow 2.11 and 3."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from airflow_provider_aoai.hooks import AzureOpenAIHook
from airflow_provider_aoai.models import Surface
from airflow_provider_aoai.provider_info import CONN_FIELDS, UI_FIELD_BEHAVIOUR
from tests.conftest import API_KEY, set_connection


def should_hide_value_for_key(name: str) -> bool:
    """Airflow's own rule for extras it masks in the UI, the API and logs."""
    try:
        from airflow._shared.secrets_masker import should_hide_value_for_key as rule  # Airflow 3
    except ImportError:
        from airflow.utils.log.secrets_masker import should_hide_value_for_key as rule  # Airflow 2
    return rule(name)


@pytest.mark.parametrize("written_as", ["json", "uri"])
@pytest.mark.parametrize(
    ("path", "surface", "request_path"),
    [("", Surface.DATA_PLANE, "/openai/files"), ("/openai/v1", Surface.V1, "/openai/v1/files")],
)
def test_json_and_uri_connections_reach_the_same_surface(
    emulator, monkeypatch, written_as, path, surface, request_path
):
    """In a URI, Airflow puts the path into ``schema``; the hook reads it as the endpoint's path."""
    if written_as == "json":
        set_connection(monkeypatch, "aoai_written", host=emulator.url + path, password=API_KEY)
    else:
        uri = f"aoai://:{API_KEY}@{urlsplit(emulator.url).netloc}{path}"
        monkeypatch.setenv("AIRFLOW_CONN_AOAI_WRITTEN", uri)
    hook = AzureOpenAIHook(aoai_conn_id="aoai_written")
    hook.list_files()
    assert hook.surface is surface
    assert emulator.faults.requests[-1].path == request_path


def test_a_foundry_project_in_uri_form(emulator, monkeypatch):
    for name, value in emulator.managed_identity_env().items():
        monkeypatch.setenv(name, value)
    netloc = urlsplit(emulator.url).netloc
    monkeypatch.setenv(
        "AIRFLOW_CONN_AOAI_PROJECT", f"aoai://{netloc}/api/projects/demo?auth_type=managed_identity"
    )
    hook = AzureOpenAIHook(aoai_conn_id="aoai_project")
    hook.list_files()
    assert hook.surface is Surface.FOUNDRY
    assert emulator.faults.requests[-1].path == "/api/projects/demo/files"


@pytest.mark.parametrize("name", sorted(CONN_FIELDS))
def test_airflow_shows_every_form_field_back(name):
    """Airflow masks extras named like secrets ("token", "secret", ...): none of the form's fields is."""
    assert not should_hide_value_for_key(name)


def test_the_client_secret_is_the_password_and_no_form_field_is_a_secret():
    """Airflow 2's form drops password-type extras on edit; the connection's password survives it."""
    assert not [name for name, field in CONN_FIELDS.items() if field["schema"].get("format") == "password"]
    assert "client secret" in UI_FIELD_BEHAVIOUR["relabeling"]["password"]


def test_the_auth_type_dropdown_offers_only_auth_types():
    from airflow_provider_aoai.credentials import AUTH_TYPES

    schema = CONN_FIELDS["auth_type"]["schema"]
    assert schema["enum"] == list(AUTH_TYPES)  # no None, which the UI shows as a literal "null"
    assert schema["default"] == "api_key"
