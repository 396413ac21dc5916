"""Many uploads at once, under a pool: one upload task mapped over a day's documents, at most the pool's
slots sending at a time to one resource, each then waiting in the triggerer until its file is processed.

The service takes 30 file uploads per second per resource and answers 429 beyond. The client waits as the
service says and retries, within a bounded time, but a pool per resource keeps a fleet of workers from
queueing into the throttle at all, across every DAG that uploads there (see docs/scale.md). Create it once:

    airflow pools set aoai_uploads 8 "uploads to one Azure OpenAI resource"

Connection ``aoai_default``. Parameters: ``workdir`` (where the documents are written), ``documents`` (how
many) and ``report_path`` (optional JSON report of the result). ``AOAI_EXAMPLE_POLL_SECONDS`` sets how often
the status is checked (default 30 s).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pendulum
from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_aoai.operators import AzureOpenAIUploadFileOperator

POLL_SECONDS = float(os.environ.get("AOAI_EXAMPLE_POLL_SECONDS", "30"))
POOL = "aoai_uploads"  # one pool per Azure OpenAI resource

with DAG(
    dag_id="example_aoai_mapped_uploads",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"workdir": "/tmp/aoai-example-mapped-uploads", "documents": 24, "report_path": ""},
    tags=["example", "azure-openai"],
) as dag:

    @task
    def write_documents(params=None) -> list[str]:
        """The day's documents, one file each (here: generated)."""
        folder = Path(params["workdir"]) / "documents"
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for n in range(int(params["documents"])):
            path = folder / f"policy-{n:03d}.md"
            path.write_text(f"# Policy {n}\n\nRequests are answered within {n % 5 + 1} working days.\n")
            paths.append(str(path))
        return paths

    # [START howto_operator_aoai_mapped_uploads_pool]
    # XCom of each: the File; a retry re-attaches to the file its earlier try created
    uploads = AzureOpenAIUploadFileOperator.partial(
        task_id="upload_document",
        purpose="assistants",
        pool=POOL,  # at most the pool's slots upload to the resource at once, across every DAG
        retries=3,
        wait_for_processing=True,
        deferrable=True,  # the wait runs in the triggerer and gives its worker and pool slots back
        poll_interval=POLL_SECONDS,
    ).expand(source=write_documents())
    # [END howto_operator_aoai_mapped_uploads_pool]

    @task
    def report(files, params=None) -> dict:
        """How many documents are ready for the agents, and their file ids."""
        summary = {"files": len(files), "ids": sorted(f["id"] for f in files)}
        print(f"{summary['files']} documents uploaded and processed")
        if params.get("report_path"):
            Path(params["report_path"]).write_text(json.dumps(summary))
        return summary

    report(uploads.output)
