"""System test DAGs: import / upload-file tasks SIGKILLed while waiting for processing; retries re-attach."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_provider_aoai.operators import AzureOpenAIImportFileOperator, AzureOpenAIUploadFileOperator

common = {
    "schedule": None,
    "start_date": datetime(2026, 1, 1),
    "catchup": False,
    "is_paused_upon_creation": False,
    "tags": ["aoai-system-test"],
}
waiting = {
    "wait_for_processing": True,
    "deferrable": False,  # wait in the task process, so a SIGKILL hits it while it waits
    "poll_interval": 1.0,
    "retries": 1,
    "retry_delay": timedelta(seconds=1),
}

with DAG(dag_id="aoai_system_reattach_import", params={"content_url": "", "filename": ""}, **common):
    AzureOpenAIImportFileOperator(
        task_id="import_file",
        content_url="{{ params.content_url }}",
        filename="{{ params.filename }}",
        purpose="fine-tune",
        **waiting,
    )

with DAG(dag_id="aoai_system_reattach_upload", params={"source": "", "filename": ""}, **common):
    AzureOpenAIUploadFileOperator(
        task_id="upload_file",
        source="{{ params.source }}",
        filename="{{ params.filename }}",
        purpose="fine-tune",
        **waiting,
    )
