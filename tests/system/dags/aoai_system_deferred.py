"""System test DAG: a deferrable sensor waits in the triggerer, which is SIGKILLed and replaced meanwhile."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG

from airflow_provider_aoai.operators import AzureOpenAIUploadFileOperator
from airflow_provider_aoai.sensors import AzureOpenAIFileStatusSensor

with DAG(
    dag_id="aoai_system_deferred",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    is_paused_upon_creation=False,
    params={"source": "", "filename": ""},
    tags=["aoai-system-test"],
):
    upload = AzureOpenAIUploadFileOperator(
        task_id="upload_file",
        source="{{ params.source }}",
        filename="{{ params.filename }}",
        purpose="fine-tune",
    )
    wait = AzureOpenAIFileStatusSensor(
        task_id="wait_until_processed",
        file_id="{{ ti.xcom_pull(task_ids='upload_file')['id'] }}",
        deferrable=True,
        poke_interval=1,
        timeout=120,
    )
    upload >> wait
