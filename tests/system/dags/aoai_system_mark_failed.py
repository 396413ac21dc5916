"""System test DAG: a slow multipart upload that a user marks failed while parts are in flight."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG

from airflow_provider_aoai.operators import AzureOpenAIMultipartUploadOperator

MIB = 1024 * 1024

with DAG(
    dag_id="aoai_system_mark_failed",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    is_paused_upon_creation=False,
    params={"source": "", "filename": ""},
    tags=["aoai-system-test"],
):
    # Big parts on a throttled link: each part request takes far longer than Airflow's 5 s SIGTERM grace,
    # so the task exits in time only if on_kill aborts the in-flight parts instead of awaiting them.
    AzureOpenAIMultipartUploadOperator(
        task_id="upload",
        source="{{ params.source }}",
        filename="{{ params.filename }}",
        purpose="assistants",
        part_size=8 * MIB,
        max_concurrency=2,
        progress_interval=1.0,
        retries=0,
    )
