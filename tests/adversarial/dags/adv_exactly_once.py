"""DAGs the adversarial exactly-once tests run with dag.test(); inputs come from the run's conf.

``conf["emulator"]`` and ``conf["key"]`` let a task script the emulator's faults over its control endpoint,
as a user's test would.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
import requests
from airflow.providers.common.compat.sdk import DAG
from airflow.sdk import task

from airflow_provider_aoai.operators import (
    AzureOpenAIImportFileOperator,
    AzureOpenAIMultipartUploadOperator,
    AzureOpenAIUploadFileOperator,
)

START = pendulum.datetime(2026, 1, 1, tz="UTC")
NOW = {"retries": 1, "retry_delay": timedelta(seconds=0)}


def _fault(conf: dict, **fault) -> None:
    response = requests.post(
        f"{conf['emulator']}/_emulator/faults", json=fault, headers={"api-key": conf["key"]}, timeout=10
    )
    response.raise_for_status()


# 1. Two imports with the same filename; the second one's first create is dropped before the service acts.
with DAG(
    dag_id="adv_reattach_same_name",
    schedule=None,
    start_date=START,
    params={"url_a": "", "url_b": "", "emulator": "", "key": ""},
) as reattach_same_name:
    other = AzureOpenAIImportFileOperator(
        task_id="other", content_url="{{ params.url_b }}", filename="shared.jsonl", purpose="fine-tune"
    )

    @task
    def drop_next_import(params=None) -> None:
        _fault(params, operation="files.import", drop=True)

    mine = AzureOpenAIImportFileOperator(
        task_id="mine",
        content_url="{{ params.url_a }}",
        filename="shared.jsonl",
        purpose="fine-tune",
        **NOW,
    )
    other >> drop_next_import() >> mine


# 1b. The same with upload-file: two sources of the same size and name.
with DAG(
    dag_id="adv_reattach_same_name_upload",
    schedule=None,
    start_date=START,
    params={"source_a": "", "source_b": "", "emulator": "", "key": ""},
) as reattach_same_name_upload:
    other_up = AzureOpenAIUploadFileOperator(
        task_id="other", source="{{ params.source_b }}", filename="shared.jsonl", purpose="fine-tune"
    )

    @task
    def drop_next_create(params=None) -> None:
        _fault(params, operation="files.create", drop=True)

    mine_up = AzureOpenAIUploadFileOperator(
        task_id="mine", source="{{ params.source_a }}", filename="shared.jsonl", purpose="fine-tune", **NOW
    )
    other_up >> drop_next_create() >> mine_up


# 2. A multipart upload whose first try fails resumably (its upload is kept), then the source goes away.
def _remove_source_and_heal(context) -> None:
    params = context["params"]
    requests.delete(f"{params['emulator']}/_emulator/faults", headers={"api-key": params["key"]}, timeout=10)
    os.unlink(params["source"])


with DAG(
    dag_id="adv_kept_upload_then_bad_input",
    schedule=None,
    start_date=START,
    params={"source": "", "emulator": "", "key": ""},
) as kept_then_bad:
    AzureOpenAIMultipartUploadOperator(
        task_id="upload",
        source="{{ params.source }}",
        purpose="fine-tune",
        part_size=1024 * 1024,
        max_concurrency=1,
        on_retry_callback=_remove_source_and_heal,
        **NOW,
    )


# 3. An upload-file whose answer is lost after the service stored the file; the filename comes from conf.
with DAG(
    dag_id="adv_lost_answer_upload",
    schedule=None,
    start_date=START,
    params={"source": "", "filename": "", "emulator": "", "key": ""},
) as lost_answer_upload:

    @task
    def lose_next_answer(params=None) -> None:
        _fault(params, operation="files.create", drop=True, after=True)

    lose_next_answer() >> AzureOpenAIUploadFileOperator(
        task_id="upload",
        source="{{ params.source }}",
        filename="{{ params.filename }}",
        purpose="fine-tune",
        **NOW,
    )
