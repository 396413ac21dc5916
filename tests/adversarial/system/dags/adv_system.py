"""DAGs of the adversarial system attacks (a real Airflow 3.3 deployment, see tests/adversarial/system)."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_provider_aoai.operators import AzureOpenAIMultipartUploadOperator

MIB = 1024 * 1024
COMMON = {
    "schedule": None,
    "start_date": datetime(2026, 1, 1),
    "catchup": False,
    "is_paused_upon_creation": False,
}

with DAG(dag_id="adv_system_no_retry", params={"source": "", "filename": ""}, **COMMON):
    AzureOpenAIMultipartUploadOperator(
        task_id="upload",
        source="{{ params.source }}",
        filename="{{ params.filename }}",
        purpose="assistants",
        part_size=1 * MIB,
        max_concurrency=2,
        retries=0,
    )

with DAG(dag_id="adv_system_retry", params={"source": "", "filename": ""}, **COMMON):
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
