"""System test DAG: a multipart upload whose task process is SIGKILLed mid-upload; the retry resumes it."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_provider_aoai.operators import AzureOpenAIMultipartUploadOperator

MIB = 1024 * 1024

with DAG(
    dag_id="aoai_system_resume",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    is_paused_upon_creation=False,
    params={"source": "", "filename": ""},
    tags=["aoai-system-test"],
):
    AzureOpenAIMultipartUploadOperator(
        task_id="upload",
        source="{{ params.source }}",
        filename="{{ params.filename }}",
        purpose="assistants",
        part_size=1 * MIB,
        max_concurrency=2,
        progress_interval=1.0,
        retries=1,
        retry_delay=timedelta(seconds=1),
    )
