"""Lineage of the operators: OpenLineage datasets and facets, and the extra of Airflow asset events.

What lives here: how a source and an Azure OpenAI file are *named* for OpenLineage, which facets describe a
file, the extra that asset events carry, and :class:`AzureOpenAILineageMixin`, which gives an operator the
OpenLineage methods that Airflow's OpenLineage listener calls. What does not: HTTP (the hook) and the facet
classes themselves (:mod:`airflow_provider_aoai.lineage_facets`, loaded only when lineage is extracted).

Importing this module imports nothing beyond the standard library: the OpenLineage provider
(``apache-airflow-providers-openlineage``, the ``openlineage`` extra) is imported only when its listener asks
an operator for its lineage, so DAG parsing stays as cheap as before and the provider stays optional.

Dataset naming (the OpenLineage naming spec), as ``namespace`` + ``name``:

* a local path or ``file://`` URL: ``file`` + the absolute path;
* ``s3://bucket/key`` (``s3a``, ``s3n``): ``s3://bucket`` + ``key``; ``gs://bucket/key`` (``gcs``):
  ``gs://bucket`` + ``key``;
* ``abfs[s]://container@account.dfs.core.windows.net/path``:
  ``abfss://container@account.dfs.core.windows.net`` + ``path`` (for ``abfs://container/path`` and
  ``az://`` the account comes from the ObjectStoragePath's filesystem; without one the namespace is
  ``abfss://container``);
* ``wasb[s]://container@account.blob.core.windows.net/path``:
  ``wasbs://container@account.blob.core.windows.net`` + ``path``;
* an import URL ``http(s)://host[:port]/path?query``: ``http(s)://host[:port]`` + ``/path``;
* a file in an Azure OpenAI resource (data plane or v1): ``azure-openai://host[:port]`` + ``files/<id>``;
* a file in an Azure AI Foundry project: ``azure-openai://host[:port]/api/projects/<project>`` +
  ``files/<id>``.

A URL's userinfo, query and fragment never become part of a name: a SAS signature stays out of lineage.
The data plane and the v1 API are two doors to the same file store, so they share one namespace.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any, NoReturn
from urllib.parse import urlsplit

from airflow_provider_aoai.redaction import redact
from airflow_provider_aoai.urls import authority

log = logging.getLogger(__name__)

#: Scheme of the namespace of files in an Azure OpenAI resource or a Foundry project.
FILE_NAMESPACE_SCHEME = "azure-openai"
#: Key of the file facet in a dataset's ``facets``.
FILE_FACET_KEY = "azureOpenAIFile"
#: ``_schemaURL`` of the file facet: a URN until the schema is published at a URL of its own.
FILE_FACET_SCHEMA_URL = "urn:airflow-provider-aoai:openlineage:AzureOpenAIFileDatasetFacet:1-0-0"
#: JSON Schema of the file facet, as serialized by the OpenLineage client (``None`` fields are left out).
FILE_FACET_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": FILE_FACET_SCHEMA_URL,
    "title": "AzureOpenAIFileDatasetFacet",
    "description": "A file in the Files service of an Azure OpenAI resource or an Azure AI Foundry project.",
    "type": "object",
    "required": ["_producer", "_schemaURL", "fileId"],
    "additionalProperties": False,
    "properties": {
        "_producer": {"type": "string", "format": "uri"},
        "_schemaURL": {"type": "string", "format": "uri"},
        "_deleted": {"type": "boolean"},
        "fileId": {"type": "string", "minLength": 1, "description": "The service's file id."},
        "filename": {"type": "string", "description": "The file's name in the service."},
        "bytes": {"type": "integer", "minimum": 0, "description": "The file's size."},
        "purpose": {"type": "string", "description": "e.g. fine-tune, batch, assistants."},
        "status": {"type": "string", "description": "The file's status when the task ended."},
        "md5": {
            "type": "string",
            "pattern": "^[0-9a-f]{32}$",
            "description": "Hex md5 of the content, computed while uploading (multipart uploads).",
        },
    },
}
# Carries the md5 through a deferral: the operator that resumes is a new instance.
_DEFER_KWARG = "aoai_lineage"

_S3_SCHEMES = {"s3", "s3a", "s3n"}
_GCS_SCHEMES = {"gs", "gcs"}
_ABFS_SCHEMES = {"abfs", "abfss", "az", "adl"}
_WASB_SCHEMES = {"wasb", "wasbs"}


def _clean(text: str) -> str:
    # Belt and braces: a name never carries a registered secret, whatever the caller put in a path.
    return redact(text, limit=None)


def _split_authority(netloc: str) -> tuple[str, str]:
    """``user@host`` -> (user, host); the userinfo's password, if any, is dropped with it."""
    userinfo, at, host = netloc.rpartition("@")
    return (userinfo.split(":", 1)[0] if at else ""), host


def url_dataset(url: str) -> tuple[str, str]:
    """The (namespace, name) of an http(s) URL: ``scheme://host[:port]`` and the path, never the query.

    :raises ValueError: not an http(s) URL with a host.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not an http(s) URL")
    return f"{parts.scheme}://{authority(parts)}", _clean(parts.path or "/")


def _account_of(source: Any) -> str | None:
    """The storage account of an ObjectStoragePath on Azure (adlfs knows it; the URL may not)."""
    try:
        account = source.fs.account_name
    except Exception:
        return None
    return account if isinstance(account, str) and account else None


def _storage_dataset(scheme: str, netloc: str, path: str, source: Any) -> tuple[str, str] | None:
    key = path.lstrip("/")
    userinfo, host = _split_authority(netloc)
    if scheme in _S3_SCHEMES and host:
        return f"s3://{host}", key  # userinfo of an ObjectStoragePath URL is its conn id
    if scheme in _GCS_SCHEMES and host:
        return f"gs://{host}", key
    if scheme in _ABFS_SCHEMES or scheme in _WASB_SCHEMES:
        account: str | None
        if "." in host and userinfo:  # container@account.<dfs|blob>.core.windows.net
            container, account = userinfo, host.split(".", 1)[0]
        else:  # container (the userinfo, if any, is an ObjectStoragePath conn id)
            container = host
            account = _account_of(source) if hasattr(source, "fs") else None
        if not container:
            return None
        if scheme in _WASB_SCHEMES:
            service = f"{container}@{account}.blob.core.windows.net" if account else container
            return f"wasbs://{service}", key
        service = f"{container}@{account}.dfs.core.windows.net" if account else container
        return f"abfss://{service}", key
    return None


def source_dataset(source: Any) -> tuple[str, str] | None:
    """The (namespace, name) of what an upload read: a path, a ``file://``/fsspec URL or an ObjectStoragePath.

    ``None`` for what has no name outside this process (an open file object, ``memory://``).
    """
    if source is None or hasattr(source, "read"):
        return None
    text = os.fspath(source) if isinstance(source, os.PathLike) and not hasattr(source, "fs") else str(source)
    if "://" not in text:
        return "file", _clean(os.path.abspath(os.path.expanduser(text)))
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme in ("file", "local"):
        return "file", _clean(os.path.abspath(parts.path))
    if scheme in ("http", "https"):
        return url_dataset(text)
    named = _storage_dataset(scheme, parts.netloc, parts.path, source)
    if named is None:
        return None
    return named[0], _clean(named[1])


def resource_namespace(base_url: str) -> str:
    """``azure-openai://host[:port][/api/projects/<project>]`` for a client's base URL.

    The base URL of a resource has no path (data plane and v1 share it); a Foundry project's keeps its
    ``/api/projects/<project>``. Only the host, port and path are used: never userinfo or a query.
    """
    parts = urlsplit(base_url)
    return f"{FILE_NAMESPACE_SCHEME}://{authority(parts)}{parts.path.rstrip('/')}"


def file_dataset_name(file_id: str) -> str:
    """The dataset name of a file in its resource's namespace."""
    return f"files/{file_id}"


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

        from airflow_provider_aoai.lineage_facets import AzureOpenAIFileDatasetFacet

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
