"""DAGs that the lifecycle tests run with dag.test(): retries re-attach to, or resume, what a try started.

Each task takes its inputs from the run's conf (via params), retries at once, and waits only briefly, so a
test can make an early try fail after the service has done part of the work.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.common.compat.sdk import DAG

from airflow_provider_aoai.operators import (
    AzureOpenAIImportFileOperator,
    AzureOpenAIMultipartUploadOperator,
    AzureOpenAIUploadFileOperator,
)

RETRIES = {"retries": 6, "retry_delay": timedelta(seconds=0)}
WAIT = {"wait_for_processing": True, "deferrable": False, "poll_interval": 0.05, "wait_timeout": 0.5}
START = pendulum.datetime(2026, 1, 1, tz="UTC")

with DAG(
    dag_id="aoai_lifecycle_upload_file",
    schedule=None,
    start_date=START,
    params={"source": ""},
) as upload_file_dag:
    AzureOpenAIUploadFileOperator(
        task_id="upload", source="{{ params.source }}", purpose="fine-tune", **WAIT, **RETRIES
    )

with DAG(dag_id="aoai_lifecycle_import", schedule=None, start_date=START, params={"url": ""}) as import_dag:
    AzureOpenAIImportFileOperator(
        task_id="import",
        content_url="{{ params.url }}",
        filename="imported.jsonl",
        purpose="fine-tune",
        **WAIT,
        **RETRIES,
    )

with DAG(
    dag_id="aoai_lifecycle_multipart",
    schedule=None,
    start_date=START,
    params={"source": "", "wait": False},
) as multipart_dag:
    AzureOpenAIMultipartUploadOperator(
        task_id="upload",
        source="{{ params.source }}",
        purpose="fine-tune",
        part_size=1024 * 1024,
        max_concurrency=1,
        **RETRIES,
    )

with DAG(
    dag_id="aoai_lifecycle_multipart_wait", schedule=None, start_date=START, params={"source": ""}
) as wait_dag:
    AzureOpenAIMultipartUploadOperator(
        task_id="upload",
        source="{{ params.source }}",
        purpose="fine-tune",
        part_size=1024 * 1024,
        **WAIT,
        **RETRIES,
    )

with DAG(
    dag_id="aoai_lifecycle_mapped", schedule=None, start_date=START, params={"sources": []}
) as mapped_dag:
    AzureOpenAIMultipartUploadOperator.partial(
        task_id="upload", purpose="fine-tune", part_size=1024 * 1024, max_concurrency=1, **RETRIES
    ).expand(source=["{{ params.sources[0] }}", "{{ params.sources[1] }}"])

with DAG(
    dag_id="aoai_lifecycle_upload_file_force_new", schedule=None, start_date=START, params={"source": ""}
) as force_new_dag:
    AzureOpenAIUploadFileOperator(
        task_id="upload", source="{{ params.source }}", purpose="fine-tune", force_new=True, **WAIT, **RETRIES
    )

with DAG(
    dag_id="aoai_lifecycle_multipart_failing", schedule=None, start_date=START, params={"source": ""}
) as failing_dag:
    AzureOpenAIMultipartUploadOperator(
        task_id="upload",
        source="{{ params.source }}",
        purpose="fine-tune",
        part_size=1024 * 1024,
        max_concurrency=1,
        retries=1,
        retry_delay=timedelta(seconds=0),
    )
