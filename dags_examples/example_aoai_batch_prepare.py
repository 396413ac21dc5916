"""Batch-job preparation: a large request file mixing deployments, split into files Azure accepts, uploaded in
parallel as expiring batch input files, waited for, and the file ids the batch jobs need.

A batch input file holds one deployment (``body.model``) and one ``url``, at most 100,000 requests and 200 MB;
a resource holds 500 batch input files without an expiration, 10,000 with one. So the request file is split
per deployment and size, and every shard expires after 14 days.

Connection ``aoai_batch``: an Azure OpenAI resource on the v1 API (extra ``api_version: v1``) or a data plane
api-version from ``2025-03-01-preview`` (they take ``expires_after``). Parameters: ``workdir``, the object
storage folder the requests are written to and the shards go to (a local one here, ``file://``; an
``s3://``/``abfs://`` ObjectStoragePath with its Airflow connection works the same), ``requests`` (how many)
and ``report_path`` (optional JSON report of the result). ``AOAI_EXAMPLE_POLL_SECONDS`` sets how often the
status is checked (default 30 s).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pendulum
from airflow.providers.common.compat.sdk import DAG, ObjectStoragePath, task

from airflow_provider_aoai.operators import AzureOpenAISplitBatchFileOperator, AzureOpenAIUploadFileOperator

POLL_SECONDS = float(os.environ.get("AOAI_EXAMPLE_POLL_SECONDS", "30"))
DEPLOYMENTS = ["gpt-4o-mini-batch", "gpt-4.1-batch", "o4-mini-batch"]

with DAG(
    dag_id="example_aoai_batch_prepare",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"workdir": "/tmp/aoai-example-batch-prepare", "requests": 3600, "report_path": ""},
    tags=["example", "azure-openai"],
) as dag:

    @task
    def write_requests(params=None) -> str:
        """The day's requests, every deployment mixed in one file, in object storage."""
        folder = ObjectStoragePath(f"file://{params['workdir']}")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "requests.jsonl"
        with path.open("wb") as out:
            for n in range(int(params["requests"])):
                line = {
                    "custom_id": f"request-{n}",
                    "method": "POST",
                    "url": "/chat/completions",
                    "body": {
                        "model": DEPLOYMENTS[n % len(DEPLOYMENTS)],
                        "messages": [{"role": "user", "content": f"Summarise ticket {n} in one line."}],
                    },
                }
                out.write(json.dumps(line).encode() + b"\n")
        return str(path)

    # [START howto_operator_aoai_split_batch_file]
    # XCom: the shards' URIs, one deployment and one url each
    split = AzureOpenAISplitBatchFileOperator(
        task_id="split_by_deployment",
        source=write_requests(),
        destination="file://{{ params.workdir }}/shards",
        max_requests=1000,  # Azure takes up to 100,000 requests (and 200 MB) per batch file
    )
    # [END howto_operator_aoai_split_batch_file]

    # [START howto_operator_aoai_upload_expiring_batch_files]
    # XCom of each: the File, with its expires_at
    shards = AzureOpenAIUploadFileOperator.partial(
        task_id="upload_shard",
        aoai_conn_id="aoai_batch",
        purpose="batch",
        expires_after=14 * 24 * 3600,  # 14 days: a resource then holds 10,000 batch files, not 500
        wait_for_processing=True,
        deferrable=True,
        poll_interval=POLL_SECONDS,
    ).expand(source=split.output)
    # [END howto_operator_aoai_upload_expiring_batch_files]

    @task
    def batch_inputs(files, params=None) -> list[dict]:
        """What each batch job needs: its input file id (and when that file expires)."""
        inputs = [
            {"input_file_id": f["id"], "filename": f["filename"], "expires_at": f["expires_at"]}
            for f in files
        ]
        for entry in inputs:
            print(f"Batch input {entry['filename']}: {entry['input_file_id']}")
        if params.get("report_path"):
            Path(params["report_path"]).write_text(json.dumps(inputs))
        return inputs

    batch_inputs(shards.output)
