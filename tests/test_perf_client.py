"""The client's cheaper request path keeps the behaviour of requests: proxies from the environment, and a
closed client (a shared one replaced after its connection changed) still serving the calls under way."""

from __future__ import annotations

import socket

import pytest

from airflow_provider_aoai.exceptions import AzureOpenAIConnectionError
from airflow_provider_aoai.hooks import AzureOpenAIHook


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def no_proxy_settings(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


def test_proxies_from_the_environment_still_apply(aoai_conn, chat_file, no_proxy_settings):
    file_id = AzureOpenAIHook(aoai_conn_id=aoai_conn).upload_file(source=chat_file, purpose="fine-tune")["id"]
    no_proxy_settings.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed_port()}")
    proxied = AzureOpenAIHook(aoai_conn_id=aoai_conn)
    with pytest.raises(AzureOpenAIConnectionError, match="refused"):
        proxied.get_file(file_id=file_id)  # sent to the (absent) proxy, as requests would

    no_proxy_settings.setenv("NO_PROXY", "127.0.0.1")
    assert AzureOpenAIHook(aoai_conn_id=aoai_conn).get_file(file_id=file_id)["id"] == file_id


def test_a_closed_client_serves_later_requests(hook, chat_file):
    file_id = hook.upload_file(source=chat_file, purpose="fine-tune")["id"]
    assert hook.get_file(file_id=file_id)["id"] == file_id
    hook.client.close()
    assert hook.get_file(file_id=file_id)["id"] == file_id
    assert hook.list_files(purpose="fine-tune")
