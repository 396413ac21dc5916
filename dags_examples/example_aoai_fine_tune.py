"""Fine-tune dataset pipeline: write a chat JSONL, multipart-upload it (checked first), wait (deferred).

Connection ``aoai_default`` points at an Azure OpenAI resource (or the bundled emulator). Parameters:
``workdir`` (where the dataset is written) and ``report_path`` (optional JSON report of the result).
``AOAI_EXAMPLE_POLL_SECONDS`` sets how often the status is checked (default 30 s).

The upload updates the asset ``TRAINING_SET``; its event carries the new file's id, which
``example_aoai_dataset_consumer`` (scheduled on that asset) reads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pendulum
from airflow.providers.common.compat.sdk import DAG, Asset, task

from airflow_provider_aoai.operators import AzureOpenAIMultipartUploadOperator
from airflow_provider_aoai.sensors import AzureOpenAIFileStatusSensor

POLL_SECONDS = float(os.environ.get("AOAI_EXAMPLE_POLL_SECONDS", "30"))
# [START howto_asset_aoai_training_set]
# The training set as an asset (a Dataset on Airflow 2): its URI names the dataset, the connection decides
# where files go. Every upload is a new file; the asset event carries its id.
TRAINING_SET = Asset("azure-openai://myres.openai.azure.com/files/fine-tune/training.jsonl")
# [END howto_asset_aoai_training_set]

EXAMPLES = [
    ("What is the capital of France?", "Paris."),
    ("How many legs does a spider have?", "Eight."),
    ("What colour is the sky on a clear day?", "Blue."),
]

with DAG(
    dag_id="example_aoai_fine_tune",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"workdir": "/tmp/aoai-example-fine-tune", "report_path": ""},
    tags=["example", "azure-openai"],
) as dag:

    @task
    def write_dataset(params=None) -> str:
        """Write the training set in chat format (the upload checks it as the service will)."""
        path = Path(params["workdir"]) / "training.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w") as out:
            for question, answer in EXAMPLES * 20:
                record = {
                    "messages": [
                        {"role": "system", "content": "You answer in one short sentence."},
                        {"role": "user", "content": question},
                        {"role": "assistant", "content": answer},
                    ]
                }
                out.write(json.dumps(record) + "\n")
        return str(path)

    dataset = write_dataset()

    # [START howto_operator_aoai_multipart_upload]
    # XCom: the Upload; the file id is ["file"]["id"]. Before its first request it checks the file as Azure
    # will (validate=True): a bad line fails the task with AzureOpenAIDatasetError, and nothing is created.
    upload = AzureOpenAIMultipartUploadOperator(
        task_id="upload_dataset",
        source=dataset,  # the path the write_dataset task returned
        purpose="fine-tune",
        filename="training.jsonl",
        part_size=8 * 1024 * 1024,  # local files stream; remote sources buffer max_concurrency x part_size
        max_concurrency=4,
        outlets=[TRAINING_SET],  # the event's extra: file_id, filename, bytes, purpose, status
    )
    # [END howto_operator_aoai_multipart_upload]

    # [START howto_sensor_aoai_file_status_deferrable]
    wait = AzureOpenAIFileStatusSensor(
        task_id="wait_until_processed",
        file_id="{{ ti.xcom_pull(task_ids='upload_dataset')['file']['id'] }}",
        deferrable=True,  # or mode="reschedule" (example_aoai_batch_import), or the default mode="poke"
        poke_interval=POLL_SECONDS,
        timeout=60 * 60,
    )
    # [END howto_sensor_aoai_file_status_deferrable]

    @task
    def report(file: dict, params=None) -> dict:
        """Report the uploaded file's id and final status (and write them to params.report_path)."""
        summary = {"file_id": file["id"], "status": file["status"], "bytes": file["bytes"]}
        print(f"Fine-tune file {summary['file_id']} is {summary['status']} ({summary['bytes']} bytes)")
        if params.get("report_path"):
            Path(params["report_path"]).write_text(json.dumps(summary))
        return summary

    upload >> wait
    report(wait.output)
