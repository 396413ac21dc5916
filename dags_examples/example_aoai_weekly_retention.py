"""Weekly retention: keep the file quota in check by deleting old fine-tune training files.

Connection ``aoai_default``. Every week, training files older than 30 days go, except the two newest
(whatever their age). Files named in the run conf go too, e.g. ones a failed pipeline left behind:
``airflow dags trigger example_aoai_weekly_retention -c '{"file_ids": ["file-..."]}'``.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_aoai.operators import AzureOpenAIDeleteFileOperator, AzureOpenAIPruneFilesOperator

with DAG(
    dag_id="example_aoai_weekly_retention",
    schedule="@weekly",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"file_ids": []},
    tags=["example", "azure-openai"],
) as dag:
    # [START howto_operator_aoai_prune_files]
    preview = AzureOpenAIPruneFilesOperator(
        task_id="list_old_training_files",
        purpose="fine-tune",
        filename_prefix="training",
        older_than=timedelta(days=30),
        keep_latest=2,
        dry_run=True,  # only lists (and logs) what would go
    )
    prune = AzureOpenAIPruneFilesOperator(
        task_id="prune_old_training_files",
        purpose="fine-tune",
        filename_prefix="training",
        older_than=timedelta(days=30),
        keep_latest=2,
    )  # XCom: the ids deleted, oldest first
    # [END howto_operator_aoai_prune_files]

    @task
    def listed_files(params=None) -> list[str]:
        """The file ids given in the run conf (none on scheduled runs)."""
        return list(params["file_ids"])

    # [START howto_operator_aoai_delete_file]
    delete = AzureOpenAIDeleteFileOperator.partial(
        task_id="delete_listed_files",
        fail_if_missing=False,  # a file that is already gone is a logged success
    ).expand(file_id=listed_files())  # XCom of each: {"object": "file", "id": ..., "deleted": true}
    # [END howto_operator_aoai_delete_file]

    preview >> prune >> delete
