"""The lineage an operator reports: OpenLineage methods for Airflow's listener, and asset-event extras.

:class:`AzureOpenAILineageMixin` gives an operator that creates a file the OpenLineage methods Airflow's
OpenLineage listener calls; :func:`deleted_files_lineage` is the lineage of delete and prune. The OpenLineage
provider (``apache-airflow-providers-openlineage``, the ``openlineage`` extra) is imported only when the
listener asks for lineage, so DAG parsing stays as cheap as before and the provider stays optional.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, NoReturn

from airflow_provider_aoai.lineage.naming import (
    file_dataset_name,
    resource_namespace,
    source_dataset,
    url_dataset,
)
from airflow_provider_aoai.lineage.schema import FILE_FACET_KEY

log = logging.getLogger(__name__)

# Carries the md5 through a deferral: the operator that resumes is a new instance.
_DEFER_KWARG = "aoai_lineage"


def file_of(result: Any) -> dict[str, Any] | None:
    """The File in an operator's result: the result itself, or the ``file`` of a completed Upload."""
    if not isinstance(result, Mapping):
        return None
    if result.get("object") == "upload":
        nested = result.get("file")
        return dict(nested) if isinstance(nested, Mapping) else None
    return dict(result) if result.get("id") else None


def asset_event_extra(file: Mapping[str, Any]) -> dict[str, Any]:
    """An asset event's extra for ``file``: ``file_id``, ``filename``, ``bytes``, ``purpose``, ``status``."""
    return {
        "file_id": file.get("id"),
        "filename": file.get("filename"),
        "bytes": file.get("bytes"),
        "purpose": file.get("purpose"),
        "status": file.get("status"),
    }


def _current_context() -> Any:
    from airflow.providers.common.compat.sdk import get_current_context

    try:
        return get_current_context()
    except Exception:
        return None


def set_asset_event_extras(outlets: Any, file: Mapping[str, Any], context: Any = None) -> list[str]:
    """Put the file's :func:`asset_event_extra` on the event of every Asset (Dataset on 2.x) in ``outlets``.

    Asset aliases are left alone: which asset an alias stands for is the DAG author's choice. Returns the
    URIs of the assets whose events got the extra (none outside a running task).
    """
    from airflow.providers.common.compat.sdk import Asset

    assets = [outlet for outlet in outlets or () if isinstance(outlet, Asset)]
    if not assets:
        return []
    context = context if context is not None and "outlet_events" in context else _current_context()
    if context is None or "outlet_events" not in context:
        return []
    extra = asset_event_extra(file)
    for asset in assets:
        context["outlet_events"][asset].extra.update(extra)
    return [asset.uri for asset in assets]


class AzureOpenAILineageMixin:
    """OpenLineage methods and asset-event extras for operators that create a file.

    The operator calls :meth:`_record_file_result` where it has its final result (a File, or an Upload with
    its File) and :meth:`_record_md5` when it computed the content's md5. Inputs are read from the
    operator's ``content_url`` (import) or ``source`` (uploads); the output is the file in the resource
    the operator's hook talks to.
    """

    _lineage_file: dict[str, Any] | None = None
    _lineage_md5: str | None = None

    # ------------------------------------------------------------------ recording (called by the operator)
    def _record_md5(self, md5: str) -> None:
        self._lineage_md5 = md5

    def _record_file_result(self, result: Any, context: Any = None) -> Any:
        """Remember the file for lineage and put it on the outlets' asset events; return ``result``."""
        file = file_of(result)
        if file is not None:
            self._lineage_file = file
            uris = set_asset_event_extras(getattr(self, "outlets", None), file, context)
            if uris:
                getattr(self, "log", log).info(
                    "Asset events of %s carry file %s", ", ".join(uris), file.get("id")
                )
        return result

    # The md5 is computed before a deferral and the operator that resumes is a new instance: carry it in
    # the resume kwargs, out of sight of the method that resumes.
    def defer(
        self, *, trigger: Any, method_name: str, kwargs: dict[str, Any] | None = None, **rest: Any
    ) -> NoReturn:
        if self._lineage_md5 is not None:
            kwargs = {**(kwargs or {}), _DEFER_KWARG: {"md5": self._lineage_md5}}
        parent: Any = super()
        parent.defer(trigger=trigger, method_name=method_name, kwargs=kwargs, **rest)
        raise RuntimeError("defer() returned")  # pragma: no cover - BaseOperator.defer always raises

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Any) -> Any:
        if next_kwargs and _DEFER_KWARG in next_kwargs:
            next_kwargs = dict(next_kwargs)
            carried = next_kwargs.pop(_DEFER_KWARG) or {}
            self._lineage_md5 = carried.get("md5")
        parent: Any = super()
        return parent.resume_execution(next_method, next_kwargs, context)

    # ------------------------------------------------------------------ OpenLineage
    def _lineage_input(self) -> list[Any]:
        from openlineage.client.generated.base import InputDataset

        content_url = getattr(self, "content_url", None)
        named: tuple[str, str] | None
        try:
            if isinstance(content_url, str):
                named = url_dataset(content_url)
            else:
                named = source_dataset(getattr(self, "source", None))
        except ValueError:
            named = None
        return [InputDataset(namespace=named[0], name=named[1])] if named else []

    def _lineage_output(self) -> list[Any]:
        from openlineage.client.generated.base import DatasetFacet, OutputDataset, OutputDatasetFacet
        from openlineage.client.generated.lifecycle_state_change_dataset import (
            LifecycleStateChange,
            LifecycleStateChangeDatasetFacet,
        )
        from openlineage.client.generated.output_statistics_output_dataset import (
            OutputStatisticsOutputDatasetFacet,
        )

        from airflow_provider_aoai.lineage.facets import AzureOpenAIFileDatasetFacet

        file = self._lineage_file
        if not file or not file.get("id"):
            return []
        size = file.get("bytes") if isinstance(file.get("bytes"), int) else None
        facets: dict[str, DatasetFacet] = {
            FILE_FACET_KEY: AzureOpenAIFileDatasetFacet(
                fileId=str(file["id"]),
                filename=file.get("filename"),
                bytes=size,
                purpose=file.get("purpose"),
                status=file.get("status"),
                md5=self._lineage_md5,
            ),
            "lifecycleStateChange": LifecycleStateChangeDatasetFacet(
                lifecycleStateChange=LifecycleStateChange.CREATE
            ),
        }
        output_facets: dict[str, OutputDatasetFacet] = {
            "outputStatistics": OutputStatisticsOutputDatasetFacet(size=size, fileCount=1)
        }
        return [
            OutputDataset(
                namespace=lineage_namespace(self),
                name=file_dataset_name(str(file["id"])),
                facets=facets,
                outputFacets=output_facets,
            )
        ]

    def get_openlineage_facets_on_start(self) -> Any:
        """Lineage before the run: the source (the file does not exist yet)."""
        from airflow.providers.openlineage.extractors import OperatorLineage

        return OperatorLineage(inputs=self._lineage_input())

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """Lineage of a successful run: the source, and the file it created with its facets."""
        from airflow.providers.openlineage.extractors import OperatorLineage

        return OperatorLineage(inputs=self._lineage_input(), outputs=self._lineage_output())


def lineage_namespace(operator: Any) -> str:
    """The namespace of the files of the resource (or Foundry project) the operator's hook talks to."""
    return resource_namespace(operator.hook.client.base_url)


def deleted_files_lineage(operator: Any, file_ids: list[str]) -> Any:
    """OperatorLineage whose outputs are ``file_ids``, each marked dropped (delete and prune)."""
    from airflow.providers.openlineage.extractors import OperatorLineage
    from openlineage.client.generated.base import OutputDataset
    from openlineage.client.generated.lifecycle_state_change_dataset import (
        LifecycleStateChange,
        LifecycleStateChangeDatasetFacet,
    )

    if not file_ids:
        return OperatorLineage()
    namespace = lineage_namespace(operator)
    return OperatorLineage(
        outputs=[
            OutputDataset(
                namespace=namespace,
                name=file_dataset_name(file_id),
                facets={
                    "lifecycleStateChange": LifecycleStateChangeDatasetFacet(
                        lifecycleStateChange=LifecycleStateChange.DROP
                    )
                },
            )
            for file_id in file_ids
        ]
    )


def split_lineage(source: Any, shards: list[str]) -> Any:
    """OperatorLineage of a split: the input file as the input, every shard written as an output."""
    from airflow.providers.openlineage.extractors import OperatorLineage
    from openlineage.client.generated.base import InputDataset, OutputDataset

    named = source_dataset(source)
    outputs = [OutputDataset(namespace=n[0], name=n[1]) for n in map(source_dataset, shards) if n is not None]
    return OperatorLineage(
        inputs=[InputDataset(namespace=named[0], name=named[1])] if named else [], outputs=outputs
    )
