"""Operators that prepare datasets before any upload: split a batch input file into files Azure accepts.

Nothing here talks to the service (no connection): the rules live in :mod:`~airflow_provider_aoai.datasets`.
Re-exported by :mod:`airflow_provider_aoai.operators`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.providers.common.compat.sdk import BaseOperator

from airflow_provider_aoai.dataset_rules import MAX_BATCH_BYTES, MAX_BATCH_REQUESTS
from airflow_provider_aoai.datasets import check_split_limits, split_batch_file


class AzureOpenAISplitBatchFileOperator(BaseOperator):
    """Split a batch input file into files Azure accepts, in one pass and constant memory.

    Each shard holds the lines of one deployment (``body.model``) and one ``url``, at most ``max_requests``
    lines and ``max_bytes`` bytes, byte-identical and in their order. Every line is checked as Azure checks a
    batch line; a bad one fails the task with
    :class:`~airflow_provider_aoai.exceptions.AzureOpenAIDatasetError` naming its line, and no shard is left
    behind. Returns the shards' paths or URIs (XCom), ready for
    ``.expand(source=...)`` of an upload operator; a retry writes the same names again. In OpenLineage the
    input file is the input and each shard an output.

    :param source: the batch input file: a path, a ``file://`` or fsspec URL, or an ``ObjectStoragePath``
        (templated).
    :param destination: where the shards go: a folder, a ``file://`` or fsspec URL, or an
        ``ObjectStoragePath`` (templated).
    :param max_requests: lines per shard, at most 100,000 (Azure's limit).
    :param max_bytes: bytes per shard, at most 1 GB (200 MB is Azure's limit, 1 GB with your own storage).
    """

    template_fields: Sequence[str] = ("source", "destination")
    ui_color = "#e8f5e9"

    def __init__(
        self,
        *,
        source: Any,
        destination: Any,
        max_requests: int = MAX_BATCH_REQUESTS,
        max_bytes: int = MAX_BATCH_BYTES,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.source = source
        self.destination = destination
        self.max_requests, self.max_bytes = check_split_limits(max_requests, max_bytes)
        self._shards: list[str] = []

    def execute(self, context: Any) -> list[str]:
        self._shards = split_batch_file(
            self.source, self.destination, max_requests=self.max_requests, max_bytes=self.max_bytes
        )
        self.log.info("Split into %d file(s): %s", len(self._shards), self._shards)
        return self._shards

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """Lineage of a successful run: the input file, and every shard this run wrote."""
        from airflow_provider_aoai.lineage import split_lineage

        return split_lineage(self.source, self._shards)
