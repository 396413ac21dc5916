"""Agent files on an Azure AI Foundry project: upload a file and wait until it is ready.

Connection ``aoai_foundry``: host ``https://<name>.services.ai.azure.com/api/projects/<project>`` with an
Entra ID auth_type (Foundry project endpoints take no api keys).
"""

from __future__ import annotations

import os
from pathlib import Path

import pendulum
from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_aoai.operators import AzureOpenAIUploadFileOperator

POLL_SECONDS = float(os.environ.get("AOAI_EXAMPLE_POLL_SECONDS", "30"))

with DAG(
    dag_id="example_aoai_foundry_agent_files",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"workdir": "/tmp/aoai-example-foundry"},
    tags=["example", "azure-ai-foundry"],
) as dag:

    @task
    def write_handbook(params=None) -> str:
        path = Path(params["workdir"]) / "support-handbook.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("# Support handbook\n\nRefunds are processed within 5 business days.\n")
        return str(path)

    # [START howto_operator_aoai_upload_file]
    # XCom: the File (a Foundry FileInfo)
    upload = AzureOpenAIUploadFileOperator(
        task_id="upload_agent_file",
        aoai_conn_id="aoai_foundry",
        source=write_handbook(),
        purpose="assistants",
        wait_for_processing=True,
        deferrable=True,
        poll_interval=POLL_SECONDS,
    )
    # [END howto_operator_aoai_upload_file]
