"""Start from a fine-tune-ready dataset: a DAG scheduled on the asset that the fine-tune example updates.

``example_aoai_fine_tune`` uploads ``training.jsonl`` with ``outlets=[TRAINING_SET]``; the asset event of
each upload carries the new file (extra: ``file_id``, ``filename``, ``bytes``, ``purpose``, ``status``).
This DAG reads the file id from the event that triggered its run, waits until the service has processed
the file, and hands it on (here it prints the fine-tuning job request it would send).

Connection ``aoai_default``, the same resource as the producer's.
"""

from __future__ import annotations

import json
import os

import pendulum
from airflow.providers.common.compat.sdk import DAG, Asset, task

from airflow_provider_aoai.sensors import AzureOpenAIFileStatusSensor

POLL_SECONDS = float(os.environ.get("AOAI_EXAMPLE_POLL_SECONDS", "30"))
# The same URI as in example_aoai_fine_tune.
TRAINING_SET = Asset("azure-openai://myres.openai.azure.com/files/fine-tune/training.jsonl")

with DAG(
    dag_id="example_aoai_dataset_consumer",
    schedule=[TRAINING_SET],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["example", "azure-openai"],
) as dag:
    # [START howto_asset_aoai_read_triggering_event]
    @task
    def read_training_file(**context) -> dict:
        """The file that the upload created, from the asset event that triggered this run."""
        # Airflow 3 calls them triggering_asset_events, Airflow 2 triggering_dataset_events.
        events = context.get("triggering_asset_events", context.get("triggering_dataset_events"))
        latest = max(
            (event for batch in events.values() for event in batch),
            key=lambda event: event.timestamp,
            default=None,
        )
        if latest is None:
            raise ValueError(
                "no asset event: this DAG runs when example_aoai_fine_tune uploads a training set"
            )
        file = latest.extra  # file_id, filename, bytes, purpose, status
        print(f"Triggered by {file['filename']} ({file['bytes']} bytes, {file['status']}): {file['file_id']}")
        return file

    training_file = read_training_file()
    # [END howto_asset_aoai_read_triggering_event]

    wait = AzureOpenAIFileStatusSensor(
        task_id="wait_until_processed",
        file_id="{{ ti.xcom_pull(task_ids='read_training_file')['file_id'] }}",
        poke_interval=POLL_SECONDS,
        timeout=60 * 60,
    )

    @task
    def start_fine_tuning(file: dict) -> dict:
        """Where a fine-tuning job would start; this example prints the request it would send."""
        request = {"model": "gpt-4o-mini-2024-07-18", "training_file": file["id"]}
        print(f"Fine-tuning request: {json.dumps(request)}")
        return request

    training_file >> wait
    start_fine_tuning(wait.output)
