"""Operators: results for XCom, waiting (blocking and deferred), templating, masking, on_kill, bad input."""

from __future__ import annotations

import json

import pytest
from airflow.providers.common.compat.sdk import TaskDeferred

from airflow_provider_aoai.exceptions import AzureOpenAIInvalidArgumentError, AzureOpenAIWaitTimeoutError
from airflow_provider_aoai.operators import (
    AzureOpenAIImportFileOperator,
    AzureOpenAIMultipartUploadOperator,
    AzureOpenAIUploadFileOperator,
)
from tests.conftest import CHAT_LINE, jsonl

FAST = {"poll_interval": 0.05, "wait_timeout": 10}


def test_upload_file_operator_returns_the_file(hook, chat_file):
    result = AzureOpenAIUploadFileOperator(task_id="up", source=str(chat_file), purpose="fine-tune").execute(
        {}
    )
    assert result["object"] == "file" and result["id"].startswith("file-")
    json.dumps(result)


def test_upload_file_operator_waits_for_processing(aoai_conn, chat_file):
    result = AzureOpenAIUploadFileOperator(
        task_id="up",
        source=str(chat_file),
        purpose="fine-tune",
        wait_for_processing=True,
        deferrable=False,
        **FAST,
    ).execute({})
    assert result["status"] == "processed"


def test_multipart_operator_defers_and_resumes_with_the_processed_file(aoai_conn, chat_file):
    operator = AzureOpenAIMultipartUploadOperator(
        task_id="mp",
        source=str(chat_file),
        purpose="fine-tune",
        part_size=1024 * 1024,
        wait_for_processing=True,
        deferrable=True,
        **FAST,
    )
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute({})
    upload = deferred.value.kwargs["result"]
    assert upload["object"] == "upload" and upload["status"] == "completed"
    assert deferred.value.trigger.file_id == upload["file"]["id"]
    event = {
        "status": "success",
        "file_id": upload["file"]["id"],
        "file": {**upload["file"], "status": "processed"},
    }
    resumed = operator.execute_complete({}, event, result=upload)
    assert resumed["id"] == upload["id"] and resumed["file"]["status"] == "processed"
    with pytest.raises(AzureOpenAIWaitTimeoutError):
        operator.execute_complete(
            {}, {"status": "timeout", "file_id": upload["file"]["id"], "message": "late"}, result=upload
        )


def test_import_operator_masks_the_rendered_sas_signature(emulator, aoai_conn):
    from airflow.providers.common.compat.sdk import redact

    signature = "c2lnbmF0dXJlLXRoYXQtbXVzdC1iZS1tYXNrZWQ="
    emulator.put_blob("batch.jsonl", jsonl([CHAT_LINE]))
    operator = AzureOpenAIImportFileOperator(
        task_id="imp",
        content_url="{{ params.url }}",
        filename="batch.jsonl",
        purpose="fine-tune",
        wait_for_processing=True,
        deferrable=False,
        **FAST,
    )
    url = emulator.blob_url("batch.jsonl", sas=f"sv=1&sig={signature}")
    operator.render_template_fields({"params": {"url": url}})
    assert operator.content_url == url
    assert signature not in redact(operator.content_url)
    assert operator.execute({})["status"] == "processed"


def test_on_kill_aborts_parts_in_flight_and_cancels_the_upload(aoai_conn, emulator, tmp_path):
    """on_kill (what SIGTERM and mark-failed call) ends a running upload at once and cancels it."""
    import threading
    import time

    from airflow_provider_aoai.exceptions import AzureOpenAIStoppedError

    source = tmp_path / "big.jsonl"
    source.write_bytes(jsonl([CHAT_LINE] * 6000))  # about 850 KiB per 6000 lines -> several parts
    source.write_bytes(source.read_bytes() * 10)
    emulator.faults.set_link(bandwidth_bytes_per_second=256 * 1024)  # each 1 MiB part takes ~4 s
    operator = AzureOpenAIMultipartUploadOperator(
        task_id="mp", source=str(source), purpose="fine-tune", part_size=1024 * 1024, max_concurrency=2
    )
    killed: list[float] = []

    def kill_once_a_part_is_under_way() -> None:  # as the SIGTERM handler would, from outside execute()
        deadline = time.monotonic() + 20
        while not emulator.faults.calls("uploads.parts") and time.monotonic() < deadline:
            time.sleep(0.02)
        killed.append(time.monotonic())
        operator.on_kill()

    killer = threading.Thread(target=kill_once_a_part_is_under_way)
    killer.start()
    with pytest.raises(AzureOpenAIStoppedError):
        operator.execute({})  # in the main thread, as Airflow runs it
    took = time.monotonic() - killed[0]
    killer.join(timeout=5)
    assert emulator.faults.calls("uploads.parts"), "no part was started"
    assert took < 2.0, f"the upload took {took:.1f}s to stop"
    upload_id = emulator.faults.calls("uploads.parts")[0].path.split("/")[3]
    assert emulator.store.get_upload(upload_id)["status"] == "cancelled"


@pytest.mark.parametrize(
    ("operator", "argument"),
    [
        (
            lambda p: AzureOpenAIUploadFileOperator(
                task_id="t", source=str(p / "missing.jsonl"), purpose="fine-tune"
            ),
            "source",
        ),
        (
            lambda p: AzureOpenAIMultipartUploadOperator(
                task_id="t", source=str(p / "missing.jsonl"), purpose="fine-tune"
            ),
            "source",
        ),
        (
            lambda p: AzureOpenAIMultipartUploadOperator(
                task_id="t", source=str(p / "ok.jsonl"), purpose="fine-tune", part_size=10
            ),
            "part_size",
        ),
        (
            lambda p: AzureOpenAIMultipartUploadOperator(
                task_id="t", source=str(p / "ok.jsonl"), purpose="nonsense"
            ),
            "purpose",
        ),
        (
            lambda p: AzureOpenAIImportFileOperator(
                task_id="t", content_url="blob.jsonl", filename="a", purpose="batch"
            ),
            "content_url",
        ),
    ],
)
def test_bad_input_fails_before_any_request(emulator, aoai_conn, tmp_path, operator, argument):
    (tmp_path / "ok.jsonl").write_bytes(jsonl([CHAT_LINE]))
    before = len(emulator.faults.requests)
    with pytest.raises(AzureOpenAIInvalidArgumentError) as caught:
        operator(tmp_path).execute({})
    assert caught.value.argument == argument
    assert len(emulator.faults.requests) == before


def test_template_fields_cover_what_users_template():
    assert {"content_url", "filename", "purpose", "aoai_conn_id"} <= set(
        AzureOpenAIImportFileOperator.template_fields
    )
    assert {"source", "purpose", "filename", "mime_type"} <= set(
        AzureOpenAIMultipartUploadOperator.template_fields
    )
    assert {"source", "purpose", "filename"} <= set(AzureOpenAIUploadFileOperator.template_fields)


def test_importing_the_operators_keeps_heavy_modules_out():
    """DAG-parse cost: no HTTP, identity or emulator stack is imported with the operators."""
    import subprocess
    import sys

    code = (
        "import sys, airflow_provider_aoai.operators, airflow_provider_aoai.sensors\n"
        "heavy = ['requests', 'azure.identity', 'starlette', 'uvicorn', 'airflow_provider_aoai.hooks',\n"
        "         'fsspec', 'openlineage', 'airflow.providers.openlineage.extractors',\n"
        "         'airflow_provider_aoai.lineage.facets']\n"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300
    )
    loaded = result.stdout.strip().splitlines()[-1]
    # Airflow itself may bring requests or fsspec along; ours must not add identity, emulator, hook or
    # OpenLineage code (the lineage methods import it when the listener calls them).
    assert (
        "azure.identity" not in loaded
        and "starlette" not in loaded
        and "airflow_provider_aoai.hooks" not in loaded
        and "openlineage" not in loaded
        and "airflow_provider_aoai.lineage.facets" not in loaded
    ), loaded
