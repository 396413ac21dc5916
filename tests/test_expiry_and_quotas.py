"""Files that expire (expires_after, sent as the service takes it, judged before any request) and the
per-resource quotas the emulator keeps, as the service does."""

from __future__ import annotations

import json
import os
import time

import pytest
import requests

from airflow_provider_aoai.emulator import Emulator
from airflow_provider_aoai.emulator.quotas import Quotas
from airflow_provider_aoai.exceptions import (
    AzureOpenAIBadRequestError,
    AzureOpenAIInvalidArgumentError,
    AzureOpenAINotFoundError,
    AzureOpenAIUnsupportedOperationError,
)
from airflow_provider_aoai.hooks import AzureOpenAIHook
from airflow_provider_aoai.operators import AzureOpenAIMultipartUploadOperator, AzureOpenAIUploadFileOperator
from tests.conftest import API_KEY, BATCH_LINE, CHAT_LINE, jsonl, set_connection
from tests.emulator_api import emulator_process

DAY = 86_400
V1 = {"api_version": "v1", "max_retries": 0}
PREVIEW = {"api_version": "2025-04-01-preview", "max_retries": 0}


def hook_for(emulator, monkeypatch, conn_id="aoai_expiry", **extra) -> AzureOpenAIHook:
    set_connection(monkeypatch, conn_id, host=emulator.url, password=API_KEY, extra=extra or V1)
    return AzureOpenAIHook(aoai_conn_id=conn_id)


@pytest.fixture
def batch_file(tmp_path):
    path = tmp_path / "requests.jsonl"
    path.write_bytes(jsonl([{**BATCH_LINE, "custom_id": f"r{n}"} for n in range(3)]))
    return path


@pytest.fixture
def chat_set(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(jsonl([CHAT_LINE] * 12))
    return path


@pytest.mark.parametrize("extra", [V1, PREVIEW], ids=["v1", "data-plane-2025-04-01-preview"])
def test_an_uploaded_file_carries_its_expiry(emulator, monkeypatch, batch_file, extra):
    hook = hook_for(emulator, monkeypatch, **extra)
    file = hook.upload_file(source=batch_file, purpose="batch", expires_after=14 * DAY)
    assert file["expires_at"] == file["created_at"] + 14 * DAY
    assert hook.get_file(file_id=file["id"])["expires_at"] == file["expires_at"]
    sent = emulator.faults.calls("files.create")[-1]
    assert sent.status in (200, 201)


def test_a_multipart_upload_gives_its_file_the_expiry(emulator, monkeypatch, chat_set):
    hook = hook_for(emulator, monkeypatch)
    upload = hook.upload_multipart(source=chat_set, purpose="fine-tune", expires_after=3600)
    file = upload["file"]
    assert file["expires_at"] == file["created_at"] + 3600


@pytest.mark.parametrize(
    ("purpose", "seconds"),
    [("batch", 3600), ("batch", 31 * DAY), ("fine-tune", 3599), ("fine-tune", 31 * DAY), ("batch", "14d")],
)
def test_an_expiry_outside_the_purposes_range_is_refused_before_any_request(
    emulator, monkeypatch, batch_file, purpose, seconds
):
    hook = hook_for(emulator, monkeypatch)
    before = len(emulator.faults.requests)
    with pytest.raises(AzureOpenAIInvalidArgumentError) as caught:
        hook.upload_file(source=batch_file, purpose=purpose, expires_after=seconds)
    with pytest.raises(AzureOpenAIInvalidArgumentError):
        hook.create_upload(
            filename="x.jsonl", purpose=purpose, total_bytes=10, mime_type="text/jsonl", expires_after=seconds
        )
    assert caught.value.argument == "expires_after"
    assert len(emulator.faults.requests) == before


@pytest.mark.parametrize(
    "connection",
    [
        {"api_version": "2024-10-21"},  # the GA data plane has no expiry
        {"api_version": "2024-08-01-preview"},
    ],
)
def test_an_api_version_without_expiry_is_told_before_any_request(
    emulator, monkeypatch, batch_file, connection
):
    hook = hook_for(emulator, monkeypatch, **connection)
    before = len(emulator.faults.requests)
    with pytest.raises(AzureOpenAIUnsupportedOperationError, match=r"expires_after.*v1"):
        hook.upload_file(source=batch_file, purpose="batch", expires_after=14 * DAY)
    assert len(emulator.faults.requests) == before
    assert hook.upload_file(source=batch_file, purpose="batch")["id"]  # without one, as before


def test_the_operators_judge_the_expiry_at_parse_and_for_the_purpose_before_any_request(
    emulator, monkeypatch, batch_file
):
    with pytest.raises(AzureOpenAIInvalidArgumentError, match="expires_after"):
        AzureOpenAIUploadFileOperator(task_id="t", source="x", purpose="batch", expires_after=60)
    hook_for(emulator, monkeypatch, conn_id="aoai_default")
    before = len(emulator.faults.requests)
    operator = AzureOpenAIMultipartUploadOperator(
        task_id="t",
        source=str(batch_file),
        purpose="batch",
        expires_after=3600,  # batch: 14 days at least
    )
    with pytest.raises(AzureOpenAIInvalidArgumentError, match="14 days"):
        operator.execute({})
    assert len(emulator.faults.requests) == before
    done = AzureOpenAIUploadFileOperator(
        task_id="t", source=str(batch_file), purpose="batch", expires_after=30 * DAY
    ).execute({})
    assert done["expires_at"] == done["created_at"] + 30 * DAY


def test_an_expired_file_is_gone(emulator, monkeypatch, batch_file):
    hook = hook_for(emulator, monkeypatch)
    file = hook.upload_file(source=batch_file, purpose="batch", expires_after=14 * DAY)
    emulator.store.set_created_at(file["id"], int(time.time()) - 14 * DAY - 1)
    with pytest.raises(AzureOpenAINotFoundError):
        hook.get_file(file_id=file["id"])
    assert file["id"] not in {f["id"] for f in hook.list_files(purpose="batch")}


@pytest.mark.parametrize(
    "fields",
    [
        {"expires_after[anchor]": "created_at", "expires_after[seconds]": str(14 * DAY)},  # the openai SDK
        {"expires_after.anchor": "created_at", "expires_after.seconds": str(14 * DAY)},  # Azure's curl
    ],
)
def test_the_emulator_takes_both_forms_the_service_is_sent(emulator, fields):
    answer = requests.post(
        f"{emulator.url}/openai/v1/files",
        headers={"api-key": API_KEY},
        files={"file": ("r.jsonl", jsonl([BATCH_LINE]))},
        data={"purpose": "batch", **fields},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["expires_at"] == answer.json()["created_at"] + 14 * DAY


@pytest.mark.parametrize(
    ("fields", "query"),
    [
        ({"expires_after[anchor]": "created_at", "expires_after[seconds]": "3600"}, "/v1/files"),
        ({"expires_after[anchor]": "last_active_at", "expires_after[seconds]": str(14 * DAY)}, "/v1/files"),
        ({"expires_after[anchor]": "created_at", "expires_after[seconds]": str(14 * DAY)}, "/files"),
    ],
    ids=["too-short-for-batch", "unknown-anchor", "ga-api-version"],
)
def test_the_emulator_refuses_an_expiry_the_service_refuses(emulator, fields, query):
    answer = requests.post(
        f"{emulator.url}/openai{query}",
        params={"api-version": "2024-10-21"} if query == "/files" else None,
        headers={"api-key": API_KEY},
        files={"file": ("r.jsonl", jsonl([BATCH_LINE]))},
        data={"purpose": "batch", **fields},
        timeout=10,
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["param" if query.startswith("/v1") else "target"] == "expires_after"


@pytest.fixture
def tight(monkeypatch):
    """An emulator of its own with small quotas."""
    quotas = Quotas(fine_tune_files=2, fine_tune_bytes=4096, batch_files=2, batch_files_expiring=3)
    with Emulator(api_key=API_KEY, processing_seconds=0.1, quotas=quotas) as emulator:
        yield emulator, hook_for(emulator, monkeypatch, conn_id="aoai_tight", max_retries=0, api_version="v1")


def test_fine_tune_files_are_counted_and_sized_per_resource(tight, tmp_path):
    _, hook = tight
    small = tmp_path / "small.jsonl"
    small.write_bytes(jsonl([CHAT_LINE] * 10))
    big = tmp_path / "big.jsonl"
    big.write_bytes(jsonl([CHAT_LINE] * 40))  # over the 4096 bytes of the quota with another
    hook.upload_file(source=small, purpose="fine-tune")
    with pytest.raises(AzureOpenAIBadRequestError) as too_big:
        hook.upload_file(source=big, purpose="fine-tune")
    assert too_big.value.code == "quotaExceeded" and "4096 bytes" in too_big.value.message
    second = hook.upload_file(source=small, purpose="fine-tune")
    with pytest.raises(AzureOpenAIBadRequestError) as too_many:
        hook.upload_file(source=small, purpose="fine-tune")
    assert too_many.value.code == "quotaExceeded"
    assert too_many.value.message == "The quota for fine-tune files is reached. The maximum is 2."
    with pytest.raises(AzureOpenAIBadRequestError, match="quotaExceeded"):
        hook.create_upload(filename="x.jsonl", purpose="fine-tune", total_bytes=10, mime_type="text/jsonl")
    hook.delete_file(file_id=second["id"])  # deleting frees the quota
    assert hook.upload_file(source=small, purpose="fine-tune")["id"]
    assert hook.upload_file(source=small, purpose="assistants")["id"]  # other purposes are not counted


def test_batch_files_without_an_expiry_are_capped_apart_from_those_with_one(tight, batch_file):
    _, hook = tight
    for _ in range(2):
        hook.upload_file(source=batch_file, purpose="batch")
    with pytest.raises(AzureOpenAIBadRequestError) as caught:
        hook.upload_file(source=batch_file, purpose="batch")
    assert caught.value.message == "The quota for files without expiry is reached. The maximum is 2."
    for _ in range(3):
        hook.upload_file(source=batch_file, purpose="batch", expires_after=14 * DAY)
    with pytest.raises(AzureOpenAIBadRequestError, match=r"with expiry is reached\. The maximum is 3"):
        hook.upload_file(source=batch_file, purpose="batch", expires_after=14 * DAY)
    assert len(hook.list_files(purpose="batch")) == 5


def test_a_complete_over_the_quota_leaves_the_upload_pending(tight, tmp_path):
    emulator, hook = tight
    data = jsonl([CHAT_LINE] * 10)
    upload = hook.create_upload(
        filename="late.jsonl", purpose="fine-tune", total_bytes=len(data), mime_type="text/jsonl"
    )
    part = hook.add_upload_part(upload_id=upload["id"], data=data)
    source = tmp_path / "fill.jsonl"
    source.write_bytes(data)
    for _ in range(2):  # the quota fills up meanwhile
        hook.upload_file(source=source, purpose="fine-tune")
    with pytest.raises(AzureOpenAIBadRequestError, match="quotaExceeded"):
        hook.complete_upload(upload_id=upload["id"], part_ids=[part["id"]])
    assert emulator.store.get_upload(upload["id"])["status"] == "pending"


def test_the_command_line_sets_the_quotas(tmp_path, batch_file):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with emulator_process("--max-batch-files", "1", env=env) as (_, url):
        codes = []
        for _ in range(2):
            answer = requests.post(
                f"{url}/openai/files",
                params={"api-version": "2024-10-21"},
                headers={"api-key": API_KEY},
                files={"file": ("r.jsonl", batch_file.read_bytes())},
                data={"purpose": "batch"},
                timeout=10,
            )
            codes.append((answer.status_code, answer.json().get("error", {}).get("code")))
    assert codes == [(201, None), (400, "quotaExceeded")]
    json.dumps(codes)


def test_a_project_s_agent_files_route_names_its_openai_route_for_an_expiry(
    emulator, monkeypatch, batch_file
):
    for name, value in emulator.managed_identity_env().items():
        monkeypatch.setenv(name, value)
    set_connection(
        monkeypatch, "aoai_agents", host=emulator.project_url("demo"), extra={"auth_type": "managed_identity"}
    )
    before = len(emulator.faults.requests)
    with pytest.raises(AzureOpenAIUnsupportedOperationError) as caught:
        AzureOpenAIHook(aoai_conn_id="aoai_agents").upload_file(
            source=batch_file, purpose="batch", expires_after=14 * DAY
        )
    assert "foundry_route: openai" in str(caught.value) and "api_version v1" not in str(caught.value)
    assert len(emulator.faults.requests) == before
