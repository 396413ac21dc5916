"""How sources and Azure OpenAI files are *named* as OpenLineage datasets (no I/O, no OpenLineage import).

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

import os
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_aoai.lineage.schema import FILE_NAMESPACE_SCHEME
from airflow_provider_aoai.redaction import redact
from airflow_provider_aoai.urls import authority

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
