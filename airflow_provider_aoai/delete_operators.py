"""Operators that remove files: delete one file, or prune files by explicit filters (a retention policy).

Thin like the other operators: each calls one hook method (which validates every argument before any
request) and returns plain JSON for XCom. In OpenLineage each deleted file is an output dataset marked
``DROP`` (see :mod:`airflow_provider_aoai.lineage`). Re-exported by :mod:`airflow_provider_aoai.operators`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator

from airflow_provider_aoai.retention import check_prune_limits
from airflow_provider_aoai.validation import check_bool

if TYPE_CHECKING:
    from airflow_provider_aoai.hooks import AzureOpenAIHook


class _AzureOpenAIDeletingOperator(BaseOperator):
    """Shared by delete and prune: the hook, and the lineage of what was deleted.

    :param aoai_conn_id: the ``aoai`` connection (templated).
    """

    ui_color = "#ffd9cf"

    def __init__(self, *, aoai_conn_id: str = "aoai_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.aoai_conn_id = aoai_conn_id
        self._deleted_ids: list[str] = []

    @cached_property
    def hook(self) -> AzureOpenAIHook:
        from airflow_provider_aoai.hooks import AzureOpenAIHook

        return AzureOpenAIHook(aoai_conn_id=self.aoai_conn_id)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """Lineage of a successful run: every file this run deleted, marked ``DROP``."""
        from airflow_provider_aoai.lineage import deleted_files_lineage

        return deleted_files_lineage(self, self._deleted_ids)


class AzureOpenAIDeleteFileOperator(_AzureOpenAIDeletingOperator):
    """Delete one file, on any surface (data plane, v1, Foundry project).

    A file that is already gone is a logged success, so re-running a cleanup is harmless; set
    ``fail_if_missing=True`` to fail instead. Returns the service's deletion object
    ``{"object": "file", "id": ..., "deleted": true}``, or ``{..., "deleted": false}`` when the file did not
    exist (nothing was deleted).

    :param file_id: the file to delete (templated), e.g. ``"{{ ti.xcom_pull(task_ids='upload')['id'] }}"``.
    :param fail_if_missing: fail when the file does not exist.
    """

    template_fields: Sequence[str] = ("file_id", "aoai_conn_id")

    def __init__(self, *, file_id: str, fail_if_missing: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.file_id = file_id
        self.fail_if_missing = check_bool(fail_if_missing, "fail_if_missing")

    def execute(self, context: Any) -> dict[str, Any]:
        deletion = self.hook.ensure_file_deleted(file_id=self.file_id, fail_if_missing=self.fail_if_missing)
        if deletion.get("deleted"):
            self._deleted_ids = [self.file_id]
            self.log.info("Deleted file %s", self.file_id)
        else:
            self.log.warning("File %s does not exist; nothing to delete", self.file_id)
        return deletion


class AzureOpenAIPruneFilesOperator(_AzureOpenAIDeletingOperator):
    """Delete the files of one purpose older than ``older_than``, keeping the ``keep_latest`` newest.

    ``purpose`` and ``older_than`` are required, so nothing is pruned by accident; every argument is checked
    before any request. Safe to retry: a file deleted meanwhile is skipped. Returns the ids deleted, oldest
    first (with ``dry_run=True``, the ids that would be deleted; nothing is).

    :param purpose: e.g. ``fine-tune`` or ``batch`` (templated).
    :param older_than: a ``datetime.timedelta``: files created longer ago than this go.
    :param filename_prefix: only files whose name starts with this (templated).
    :param keep_latest: keep this many of the newest matching files, whatever their age.
    :param dry_run: only list (and log) what would be deleted.
    """

    template_fields: Sequence[str] = ("purpose", "filename_prefix", "aoai_conn_id")

    def __init__(
        self,
        *,
        purpose: str,
        older_than: timedelta,
        filename_prefix: str | None = None,
        keep_latest: int = 0,
        dry_run: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.purpose = purpose
        # Checked when the DAG is parsed; purpose and the prefix are templated: checked in execute.
        check_prune_limits(older_than=older_than, keep_latest=keep_latest)
        self.older_than = older_than
        self.filename_prefix = filename_prefix
        self.keep_latest = keep_latest
        # Not self.dry_run: BaseOperator.dry_run() is a method Airflow calls.
        self.is_dry_run = check_bool(dry_run, "dry_run")

    def execute(self, context: Any) -> list[str]:
        file_ids = self.hook.prune_files(
            purpose=self.purpose,
            older_than=self.older_than,
            filename_prefix=self.filename_prefix,
            keep_latest=self.keep_latest,
            dry_run=self.is_dry_run,
        )
        self._deleted_ids = [] if self.is_dry_run else list(file_ids)
        self.log.info(
            "%s %d file(s): %s", "Would delete" if self.is_dry_run else "Deleted", len(file_ids), file_ids
        )
        return file_ids
