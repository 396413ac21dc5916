"""The client's cheaper request path (keep-alive connections on ``http.client`` for requests whose body is
in memory) keeps the behaviour of requests: proxies from the environment, a closed client (a shared one
replaced after its connection changed) still serving the calls under way, a connection the service closed
while idle never reused (a create sent on it would fail as "may have acted"), and a kill shutting the
sockets of the requests under way. TLS through it is in test_credentials_tls.py."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from airflow_provider_aoai.credentials import ApiKeyAuth
from airflow_provider_aoai.exceptions import AzureOpenAIConnectionError, AzureOpenAIStoppedError
from airflow_provider_aoai.hooks import AzureOpenAIHook
from airflow_provider_aoai.http.client import AzureOpenAIClient
from airflow_provider_aoai.http.policy import Retry
from tests.adversarial.hostile import HostileService, RawService, json_answer, trickle
from tests.conftest import API_KEY


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


def answers_then_hangs_up(hung_up: threading.Semaphore):
    """Answers with keep-alive (no ``Connection: close``) and then hangs up anyway, as a load balancer does
    with idle connections; ``hung_up`` is released once it has."""

    def serve(connection: socket.socket, service: RawService) -> None:
        if service.read_request(connection) is not None:
            connection.sendall(
                json_answer("200 OK", {"id": "upload-1", "object": "upload", "status": "pending"})
            )
        connection.close()
        hung_up.release()

    return serve


def test_a_connection_the_service_closed_while_idle_is_not_reused_for_a_create():
    hung_up = threading.Semaphore(0)
    with RawService(answers_then_hangs_up(hung_up)) as service:
        client = AzureOpenAIClient(endpoint=service.url, auth=ApiKeyAuth(API_KEY), max_retries=0)
        client.request("GET", ("uploads", "upload-1"))
        assert hung_up.acquire(timeout=10), "the service did not hang up"
        # Sent on the dead connection, a read would fail (no retries here); the idle check drops it first.
        client.request("GET", ("uploads", "upload-1"))
        assert hung_up.acquire(timeout=10), "the service did not hang up"
        # Sent on the dead connection, the create would fail as "may have acted" and never be repeated.
        created = client.request("POST", ("uploads",), retry=Retry.CREATE, json={"purpose": "fine-tune"})
        assert created.json()["id"] == "upload-1"
        assert [line.split(b"?")[0] for line in service.request_lines] == [
            b"GET /openai/uploads/upload-1",
            b"GET /openai/uploads/upload-1",
            b"POST /openai/uploads",
        ]


@pytest.mark.parametrize("through_proxy", [False, True], ids=["direct", "proxy"])
def test_a_kill_shuts_the_socket_of_a_request_under_way(no_proxy_settings, through_proxy):
    body = json.dumps({"id": "file-1", "object": "file"}).encode()
    with HostileService(trickle(body, every=1.0)) as service:  # ~30 s to answer in full
        endpoint = service.url
        if through_proxy:  # the service is the proxy too: requests sends it every request
            no_proxy_settings.setenv("HTTP_PROXY", service.url)
            endpoint = "http://localhost:1"
        client = AzureOpenAIClient(endpoint=endpoint, auth=ApiKeyAuth(API_KEY), timeout=60)
        stop = threading.Event()
        outcome: list[BaseException] = []

        def poll() -> None:
            try:
                client.request("GET", ("files", "file-1"), stop=stop)
            except BaseException as exc:
                outcome.append(exc)

        worker = threading.Thread(target=poll)
        worker.start()
        deadline = time.monotonic() + 10
        while service.requests == 0 and time.monotonic() < deadline:
            time.sleep(0.01)  # waiting for the condition: the request has reached the service
        assert service.requests == 1
        stop.set()
        assert client.abort_in_flight() == 1
        worker.join(timeout=5)
        assert not worker.is_alive(), "the request went on after its socket was shut"
        assert len(outcome) == 1 and isinstance(outcome[0], AzureOpenAIStoppedError)
        assert service.requests == 1  # not sent again
