"""System test DAG on CeleryExecutor: about 60 uploads, plain and multipart, each waiting in the triggerer.

The sources are the files of ``{{ params.folder }}/plain`` and ``{{ params.folder }}/multipart`` (the test
writes them; every Celery worker reads the same folder). Each upload is a mapped task instance that runs in
the pool ``aoai_uploads`` (the test creates it: a few slots, the lever for a throttled service) and then
defers until its file is processed (``wait_for_processing=True, deferrable=True``); a deferred task holds no
pool slot. This folder is not the other system tests' DAG folder, so their deployment does not parse it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG, get_current_context, task

from airflow_provider_aoai.operators import AzureOpenAIMultipartUploadOperator, AzureOpenAIUploadFileOperator

MIB = 1024 * 1024
POOL = "aoai_uploads"

with DAG(
    dag_id="aoai_system_scale",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    is_paused_upon_creation=False,
    params={"folder": ""},
    max_active_tasks=128,  # the pool is what limits the uploads, not the DAG
    tags=["aoai-system-test"],
):

    @task
    def list_sources(kind: str) -> list[dict[str, str]]:
        """``{"source", "filename"}`` for each file of ``<folder>/<kind>``, in name order."""
        folder = Path(get_current_context()["params"]["folder"]) / kind
        return [{"source": str(path), "filename": path.name} for path in sorted(folder.iterdir())]

    # A killed worker's tasks are retried; a retry re-attaches to (or resumes) what the killed try began.
    common = {
        # Fine-tune files stay pending for the emulator's processing time (assistants files are processed at
        # once), so every wait is deferred meanwhile; each source is a valid chat dataset.
        "purpose": "fine-tune",
        "wait_for_processing": True,
        "deferrable": True,
        "poll_interval": 2.0,
        "wait_timeout": 600.0,
        "pool": POOL,
        "retries": 3,
        "retry_delay": timedelta(seconds=1),
    }
    AzureOpenAIUploadFileOperator.partial(task_id="upload_plain", **common).expand_kwargs(
        list_sources.override(task_id="plain_sources")("plain")
    )
    AzureOpenAIMultipartUploadOperator.partial(
        task_id="upload_multipart", part_size=1 * MIB, max_concurrency=4, progress_interval=1.0, **common
    ).expand_kwargs(list_sources.override(task_id="multipart_sources")("multipart"))
