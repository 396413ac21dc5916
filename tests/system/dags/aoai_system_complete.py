"""System test DAG: a small multipart upload while the service answers 503 to ``complete`` once."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_provider_aoai.operators import AzureOpenAIMultipartUploadOperator

MIB = 1024 * 1024

with DAG(
    dag_id="aoai_system_complete",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    is_paused_upon_creation=False,
    params={"source": "", "filename": ""},
    tags=["aoai-system-test"],
):
    # retries=1 so that a task that gives up on complete is retried by Airflow: the test then sees
    # try_number 2 instead of a plain failure, which is the waste the hook's own retry must avoid.
    AzureOpenAIMultipartUploadOperator(
        task_id="upload",
        source="{{ params.source }}",
        filename="{{ params.filename }}",
        purpose="assistants",
        part_size=1 * MIB,
        max_concurrency=2,
        retries=1,
        retry_delay=timedelta(seconds=1),
    )
