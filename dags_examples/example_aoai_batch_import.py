"""Batch-job preparation: import a batch JSONL from a URL (e.g. a blob SAS URL), wait until it is processed.

Connection ``aoai_default`` (a data plane endpoint: import is not offered on v1 or Foundry). Parameter
``content_url``: the URL the service downloads from. Keep SAS URLs in a Variable or the run conf, not in
DAG code: the operator masks the signature once rendered.
"""

from __future__ import annotations

import os

import pendulum
from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_aoai.operators import AzureOpenAIImportFileOperator
from airflow_provider_aoai.sensors import AzureOpenAIFileStatusSensor

POLL_SECONDS = float(os.environ.get("AOAI_EXAMPLE_POLL_SECONDS", "30"))

with DAG(
    dag_id="example_aoai_batch_import",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"content_url": "https://<account>.blob.core.windows.net/batch/requests.jsonl?<sas>"},
    tags=["example", "azure-openai"],
) as dag:
    # [START howto_operator_aoai_import_file]
    # XCom: the File; its id is ["id"]
    import_requests = AzureOpenAIImportFileOperator(
        task_id="import_batch_requests",
        content_url="{{ params.content_url }}",
        # The run's start, not {{ ds_nodash }}: a run triggered without a logical date has none.
        filename="batch-requests-{{ dag_run.start_date | ts_nodash }}.jsonl",
        purpose="batch",
    )
    # [END howto_operator_aoai_import_file]

    # [START howto_sensor_aoai_file_status_reschedule]
    wait = AzureOpenAIFileStatusSensor(
        task_id="wait_until_processed",
        file_id="{{ ti.xcom_pull(task_ids='import_batch_requests')['id'] }}",
        mode="reschedule",
        poke_interval=POLL_SECONDS,
        timeout=2 * 60 * 60,
    )
    # [END howto_sensor_aoai_file_status_reschedule]

    @task
    def ready_for_batch(file: dict) -> str:
        print(f"Batch input {file['id']} is {file['status']}")
        return file["id"]

    import_requests >> wait
    ready_for_batch(wait.output)
