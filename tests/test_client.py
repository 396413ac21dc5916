"""Retries, backoff and error mapping, over real sockets with faults scripted on the emulator."""

from __future__ import annotations

import email.utils
import socket
import time

import pytest

from airflow_provider_aoai.credentials import ApiKeyAuth
from airflow_provider_aoai.exceptions import (
    AzureOpenAIBadRequestError,
    AzureOpenAIConnectionError,
    AzureOpenAIRateLimitError,
    AzureOpenAIServiceError,
)
from airflow_provider_aoai.http.client import AzureOpenAIClient
from airflow_provider_aoai.http.endpoint import normalize_endpoint
from airflow_provider_aoai.http.policy import MAX_BACKOFF_SECONDS, Retry, backoff_seconds, parse_retry_after
from airflow_provider_aoai.models import Surface
from tests.conftest import API_KEY, CHAT_LINE, jsonl


def statuses(emulator, operation):
    return [r.status for r in emulator.faults.calls(operation)]


def files_created(hook):
    return len(hook.list_files())


def test_a_retry_after_past_the_backoff_cap_is_honoured_in_full():
    # The cap bounds our own backoff; the service's Retry-After is never cut (max_retry_wait decides).
    assert [backoff_seconds(n, 120.0, first=0.5) for n in range(8)] == [120.0] * 8
    assert 0.25 <= backoff_seconds(0, None, first=0.5) <= 0.5
    assert MAX_BACKOFF_SECONDS / 2 <= backoff_seconds(20, None, first=0.5) <= MAX_BACKOFF_SECONDS
    assert 0.25 <= backoff_seconds(0, 0.1, first=0.5) <= 0.5  # the jitter above a short Retry-After


def test_retry_after_forms():
    assert parse_retry_after({"retry-after-ms": "250"}) == 0.25
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= parse_retry_after({"retry-after": when}) <= 31
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


@pytest.mark.parametrize(
    ("endpoint", "api_version", "surface", "base"),
    [
        ("https://r.openai.azure.com/", None, Surface.DATA_PLANE, "https://r.openai.azure.com"),
        ("https://r.openai.azure.com/openai", None, Surface.DATA_PLANE, "https://r.openai.azure.com"),
        ("https://r.cognitiveservices.azure.com", "v1", Surface.V1, "https://r.cognitiveservices.azure.com"),
        ("https://r.openai.azure.com/openai/v1", None, Surface.V1, "https://r.openai.azure.com"),
        (
            "https://r.services.ai.azure.com/api/projects/p",
            None,
            Surface.FOUNDRY,
            "https://r.services.ai.azure.com/api/projects/p",
        ),
        ("http://127.0.0.1:8080", None, Surface.DATA_PLANE, "http://127.0.0.1:8080"),
    ],
)
def test_endpoints_select_their_surface(endpoint, api_version, surface, base):
    assert normalize_endpoint(endpoint, api_version) == (base, surface)


def test_throttled_reads_are_retried_honouring_retry_after(hook, emulator):
    emulator.faults.inject("files.list", status=429, retry_after_ms=200, count=2)
    started = time.monotonic()
    hook.list_files()
    assert time.monotonic() - started >= 0.4
    assert statuses(emulator, "files.list")[-3:] == [429, 429, 200]


@pytest.mark.parametrize("status", [408, 500, 502, 503, 504])
def test_transient_read_failures_are_retried(hook, emulator, status):
    emulator.faults.inject("files.list", status=status, retry_after="0")
    hook.list_files()
    assert statuses(emulator, "files.list")[-2:] == [status, 200]


def test_dropped_connections_are_retried_for_safe_requests(hook, emulator, chat_file):
    emulator.faults.inject("files.list", drop=True)
    hook.list_files()
    emulator.faults.inject("uploads.parts", drop=True)
    upload = hook.upload_multipart(source=chat_file, purpose="fine-tune")
    assert upload["status"] == "completed"
    assert [r.fault for r in emulator.faults.calls("uploads.parts")][:2] == ["drop", None]


def test_client_errors_are_never_retried(hook, emulator):
    emulator.faults.inject("files.list", status=400)
    with pytest.raises(AzureOpenAIBadRequestError) as caught:
        hook.list_files()
    assert statuses(emulator, "files.list") == [400]
    error = caught.value
    assert (error.status, error.code) == (400, "invalidPayload") and error.message and error.request_id


def test_retries_run_out_with_a_typed_error(hook, emulator):
    emulator.faults.inject("files.list", status=429, retry_after_ms=1, count=10)
    with pytest.raises(AzureOpenAIRateLimitError) as caught:
        hook.list_files()
    assert caught.value.status == 429 and caught.value.code == "tooManyRequests"
    assert len(statuses(emulator, "files.list")) == 1 + 3  # max_retries=3 in the test connection


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_create_that_may_have_acted_is_not_repeated(hook, emulator, chat_file, status):
    before = files_created(hook)
    emulator.faults.inject("files.create", status=status)
    with pytest.raises(AzureOpenAIServiceError):
        hook.upload_file(source=chat_file, purpose="fine-tune")
    assert statuses(emulator, "files.create") == [status]
    assert files_created(hook) == before


def test_a_dropped_create_is_not_repeated(hook, emulator, chat_file):
    before = files_created(hook)
    emulator.faults.inject("files.create", drop=True)
    with pytest.raises(AzureOpenAIConnectionError, match="may have acted"):
        hook.upload_file(source=chat_file, purpose="fine-tune")
    assert len(emulator.faults.calls("files.create")) == 1
    assert files_created(hook) == before


@pytest.mark.parametrize("operation", ["files.create", "files.import", "uploads.create", "uploads.complete"])
def test_a_throttled_create_is_repeated_once_and_creates_one_object(hook, emulator, chat_file, operation):
    before = files_created(hook)
    emulator.faults.inject(operation, status=429, retry_after_ms=1)
    if operation == "files.create":
        hook.upload_file(source=chat_file, purpose="fine-tune")
    elif operation == "files.import":
        hook.import_file(
            content_url=emulator.put_blob("t.jsonl", jsonl([CHAT_LINE])),
            filename="t.jsonl",
            purpose="fine-tune",
        )
    else:
        hook.upload_multipart(source=chat_file, purpose="fine-tune")
    assert statuses(emulator, operation) == [429, 200 if operation.startswith("uploads") else 201]
    assert files_created(hook) == before + 1


def test_a_create_whose_connection_never_opened_is_repeated():
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = AzureOpenAIClient(
        endpoint=f"http://127.0.0.1:{port}", auth=ApiKeyAuth(API_KEY), max_retries=2, backoff_seconds=0.01
    )
    with pytest.raises(AzureOpenAIConnectionError, match="after 3 attempt"):
        client.request("POST", ("uploads",), retry=Retry.CREATE, json={})
