"""AzureOpenAIHook: an Airflow ``aoai`` connection -> the Files service of Azure OpenAI or a Foundry project.

Every public method takes keyword arguments, validates them before any request and returns plain JSON-able
dicts shaped like the service's objects, ready for XCom. HTTP, retries and error mapping live in
:mod:`airflow_provider_aoai.client`; the upload engine in :mod:`airflow_provider_aoai.uploads`.
"""

from __future__ import annotations

import os
import threading
import time
from functools import cached_property
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from airflow.providers.common.compat.sdk import BaseHook

from airflow_provider_aoai.client import AzureOpenAIClient, MultipartBody, Retry, normalize_endpoint
from airflow_provider_aoai.credentials import build_auth, connection_field, mask
from airflow_provider_aoai.exceptions import (
    AzureOpenAIConfigError,
    AzureOpenAIError,
    AzureOpenAIFileProcessingError,
    AzureOpenAIInvalidArgumentError,
    AzureOpenAIUnsupportedOperationError,
    AzureOpenAIUploadError,
    AzureOpenAIWaitTimeoutError,
)
from airflow_provider_aoai.models import (
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_PART_BYTES,
    MAX_FILE_BYTES,
    MAX_UPLOAD_BYTES,
    File,
    FileStatus,
    Surface,
    Upload,
    UploadPart,
    purposes_for,
)
from airflow_provider_aoai.redaction import redact_url
from airflow_provider_aoai.uploads import (
    Progress,
    check_jsonl_start,
    check_part_size,
    open_source,
    send_parts,
)
from airflow_provider_aoai.urls import is_loopback

DEFAULT_POLL_INTERVAL = 5.0
DEFAULT_WAIT_TIMEOUT = 60 * 60.0
# Query parameters whose values are credentials in the URLs users import from (SAS, presigned URLs).
SECRET_QUERY_KEYS = frozenset(
    {"sig", "signature", "x-amz-signature", "x-goog-signature", "token", "code", "key"}
)


def mask_url_secrets(url: str) -> None:
    """Register a URL's query string and signature-like values with the secrets masker."""
    query = urlsplit(url).query
    if not query:
        return
    mask(query)
    for key, value in parse_qsl(query, keep_blank_values=False):
        if key.lower() in SECRET_QUERY_KEYS:
            mask(value)


def _endpoint_of(conn: Any) -> str:
    """The endpoint URL of a connection: its host, given a scheme (and port) when written without one.

    URI-style connections (``aoai://:key@myres.openai.azure.com``) carry a bare host: https is assumed,
    except for loopback hosts, where the emulator listens on plain http. Airflow parses the path of a URI
    (``aoai://:key@myres.openai.azure.com/openai/v1``) into the schema: it is the endpoint's path.
    """
    host = (conn.host or "").strip()
    path_in_schema = (conn.schema or "").strip().strip("/")
    if path_in_schema and host and urlsplit(host if "://" in host else f"//{host}").path.strip("/") == "":
        host = f"{host.rstrip('/')}/{path_in_schema}"
    if not host or "://" in host:
        return host
    name, _, path = host.partition("/")
    if conn.port and ":" not in name:
        name = f"{name}:{conn.port}"
    scheme = "http" if is_loopback(name.rsplit(":", 1)[0].strip("[]")) else "https"
    return f"{scheme}://{name}" + (f"/{path}" if path else "")


class AzureOpenAIHook(BaseHook):
    """Talk to the Files service of an Azure OpenAI resource or an Azure AI Foundry project.

    The connection's host is the endpoint: ``https://<name>.openai.azure.com``,
    ``https://<name>.cognitiveservices.azure.com`` or ``https://<name>.services.ai.azure.com/api/projects/<p>``.
    The password is the api key; extras pick the api-version and the Entra ID auth mode (see the README).

    Errors every method may raise: :class:`AzureOpenAIConfigError` (unusable connection),
    :class:`AzureOpenAICredentialError` (no Entra ID token), an :class:`AzureOpenAIAPIError` subclass per HTTP
    status (with code, message, target and request id) once retries are exhausted or when retrying could not
    help, and :class:`AzureOpenAIConnectionError` when the service cannot be reached. Arguments are checked
    first: :class:`AzureOpenAIInvalidArgumentError` and :class:`AzureOpenAIUnsupportedOperationError` are
    raised before any request.

    :param aoai_conn_id: the Airflow connection id (type ``aoai``).
    """

    conn_name_attr = "aoai_conn_id"
    default_conn_name = "aoai_default"
    conn_type = "aoai"
    hook_name = "Azure OpenAI Files"

    def __init__(self, aoai_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.aoai_conn_id = aoai_conn_id

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Airflow 2 reads this; Airflow 3 reads the same dict from the provider info."""
        from airflow_provider_aoai.provider_info import UI_FIELD_BEHAVIOUR

        return {key.replace("-", "_"): value for key, value in UI_FIELD_BEHAVIOUR.items()}

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Airflow 2's connection form, built from the ``conn-fields`` that Airflow 3 reads directly."""
        from flask_appbuilder.fieldwidgets import BS3PasswordFieldWidget, BS3TextFieldWidget
        from flask_babel import lazy_gettext
        from wtforms import PasswordField, StringField

        from airflow_provider_aoai.provider_info import CONN_FIELDS

        widgets = {}
        for name, field in CONN_FIELDS.items():
            secret = field["schema"].get("format") == "password"
            kind, widget = (
                (PasswordField, BS3PasswordFieldWidget) if secret else (StringField, BS3TextFieldWidget)
            )
            widgets[name] = kind(
                lazy_gettext(field["label"]), description=field["description"], widget=widget()
            )
        return widgets

    # ------------------------------------------------------------------------------ connection
    @cached_property
    def client(self) -> AzureOpenAIClient:
        """The HTTP client for this connection, built on first use.

        :raises AzureOpenAIConfigError: the connection is incomplete or names an unknown auth type.
        """
        conn = self.get_connection(self.aoai_conn_id)
        extras = conn.extra_dejson or {}
        host = _endpoint_of(conn)
        if not host:
            raise AzureOpenAIConfigError(f"Connection {self.aoai_conn_id!r}: the host (endpoint) is empty.")
        api_version = connection_field(extras, "api_version")
        try:
            _, surface = normalize_endpoint(host, api_version)
        except AzureOpenAIConfigError as exc:
            raise AzureOpenAIConfigError(f"Connection {self.aoai_conn_id!r}: {exc}") from None
        scope = connection_field(extras, "scope") or surface.default_scope
        if surface is Surface.FOUNDRY and connection_field(extras, "auth_type") in (None, "api_key"):
            raise AzureOpenAIConfigError(
                f"Connection {self.aoai_conn_id!r}: Foundry project endpoints accept only Microsoft Entra ID "
                "tokens; set the auth_type extra to client_secret, managed_identity, workload_identity or default."
            )
        auth = build_auth(
            conn_id=self.aoai_conn_id, extras=extras, login=conn.login, password=conn.password, scope=scope
        )
        try:
            timeout = float(connection_field(extras, "timeout") or 120)
            max_retries = int(
                connection_field(extras, "max_retries")
                if connection_field(extras, "max_retries") is not None
                else 5
            )
            backoff = float(connection_field(extras, "retry_backoff") or 0.5)
        except (TypeError, ValueError) as exc:
            raise AzureOpenAIConfigError(
                f"Connection {self.aoai_conn_id!r}: timeout, max_retries and retry_backoff must be numbers ({exc})"
            ) from None
        try:
            client = AzureOpenAIClient(
                endpoint=host,
                auth=auth,
                api_version=api_version,
                timeout=timeout,
                max_retries=max_retries,
                backoff_seconds=backoff,
            )
        except AzureOpenAIConfigError as exc:
            raise AzureOpenAIConfigError(f"Connection {self.aoai_conn_id!r}: {exc}") from None
        self.log.debug("Connection %s -> %s (%s)", self.aoai_conn_id, client.base_url, client.surface.value)
        return client

    @property
    def surface(self) -> Surface:
        return self.client.surface

    def get_conn(self) -> AzureOpenAIClient:
        return self.client

    def test_connection(self) -> tuple[bool, str]:
        """List files to prove the endpoint, the credentials and the api-version work together."""
        try:
            files = self.list_files()
        except AzureOpenAIError as exc:
            return False, str(exc)
        return (
            True,
            f"Connected to {self.client.base_url} ({self.surface.value}); {len(files)} file(s) visible.",
        )

    # ------------------------------------------------------------------------------ validation helpers
    def _require(self, operation: str, supported: bool) -> None:
        if not supported:
            raise AzureOpenAIUnsupportedOperationError(
                f"{operation} is not offered by the {self.surface.value} surface of connection "
                f"{self.aoai_conn_id!r}; use an Azure OpenAI resource endpoint for it."
            )

    def _check_purpose(self, purpose: Any, operation: str) -> str:
        allowed = purposes_for(self.surface, operation)
        if purpose not in allowed:
            raise AzureOpenAIInvalidArgumentError(
                "purpose", f"{purpose!r} is not accepted here; expected one of: {', '.join(allowed)}"
            )
        return purpose

    @staticmethod
    def _check_id(value: Any, argument: str) -> str:
        if not isinstance(value, str) or not value.strip() or "/" in value or "?" in value:
            raise AzureOpenAIInvalidArgumentError(argument, f"{value!r} is not a valid id")
        return value

    @staticmethod
    def _check_text(value: Any, argument: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise AzureOpenAIInvalidArgumentError(argument, "must be a non-empty string")
        return value

    # ------------------------------------------------------------------------------ files
    def import_file(self, *, content_url: str, filename: str, purpose: str) -> File:
        """Create a file from a URL (e.g. a blob SAS URL); the service downloads it. Returns the File.

        The URL's query string (a SAS signature) is masked in logs and never appears in messages.

        :raises AzureOpenAIInvalidArgumentError: bad URL, filename or purpose; nothing is sent.
        :raises AzureOpenAIUnsupportedOperationError: the connection is not a data plane connection.
        """
        self._check_text(content_url, "content_url")
        mask_url_secrets(content_url)
        parts = urlsplit(content_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise AzureOpenAIInvalidArgumentError(
                "content_url", f"{redact_url(content_url)!r} is not an http(s) URL"
            )
        self._check_text(filename, "filename")
        self._require("import_file", self.surface.supports_import)
        self._check_purpose(purpose, "import_file")
        file = self.client.request_json(
            "POST",
            "files/import",
            retry=Retry.CREATE,
            json={"content_url": content_url, "filename": filename, "purpose": purpose},
        )
        self.log.info("Import of %s started as file %s", redact_url(content_url), file.get("id"))
        return file

    def _prepare_upload(self, source: Any, purpose: str, filename: str | None, operation: str, limit: int):
        self._check_purpose(purpose, operation)
        if filename is not None:
            self._check_text(filename, "filename")
        opened = open_source(source)
        if opened.size == 0:
            raise AzureOpenAIInvalidArgumentError("source", f"{opened.description} is empty")
        if opened.size > limit:
            raise AzureOpenAIInvalidArgumentError(
                "source",
                f"{opened.description} holds {opened.size} bytes; the limit for {operation} is {limit}",
            )
        check_jsonl_start(opened, purpose)
        return opened, filename or opened.name

    def upload_file(self, *, source: Any, purpose: str, filename: str | None = None) -> File:
        """Upload a file of up to 512 MiB in one request (``POST files``), streaming it. Returns the File.

        :param source: local path, ``file://``/fsspec URL, ``ObjectStoragePath`` or seekable binary file object.
        :raises AzureOpenAIInvalidArgumentError: missing, empty or oversized source; bad purpose or filename.
        """
        opened, name = self._prepare_upload(source, purpose, filename, "upload_file", MAX_FILE_BYTES)
        fields = {"purpose": purpose}
        if self.surface is Surface.FOUNDRY:
            fields["filename"] = name
        body = MultipartBody(
            fields=fields, file_field="file", filename=name, size=opened.size, opener=opened.open
        )
        self.log.info("Uploading %s (%d bytes) as %s", opened.description, opened.size, name)
        return self.client.request_json("POST", "files", retry=Retry.CREATE, body=body)

    def get_file(self, *, file_id: str) -> File:
        """The File (or Foundry FileInfo) with its current status.

        :raises AzureOpenAINotFoundError: no such file.
        """
        return self.client.request_json("GET", f"files/{self._check_id(file_id, 'file_id')}")

    def list_files(self, *, purpose: str | None = None) -> list[File]:
        """All files, optionally only those with ``purpose`` (following ``has_more`` pages where offered)."""
        params: dict[str, Any] = {"purpose": purpose} if purpose else {}
        files: list[File] = []
        while True:
            page = self.client.request_json("GET", "files", params=params)
            files.extend(page.get("data", []))
            if not page.get("has_more") or not files:
                return files
            params["after"] = files[-1]["id"]

    def delete_file(self, *, file_id: str) -> dict[str, Any]:
        """Delete a file; returns ``{"object": "file", "deleted": true, "id": ...}``.

        :raises AzureOpenAINotFoundError: no such file (or already deleted).
        """
        return self.client.request_json("DELETE", f"files/{self._check_id(file_id, 'file_id')}")

    def download_file(self, *, file_id: str, destination: Any) -> dict[str, Any]:
        """Stream a file's content to ``destination``: a local path or an ``ObjectStoragePath``.

        A local file is written under a temporary name and renamed at the end, so a failed download never
        leaves a partial file behind. Returns ``{"file_id", "destination", "bytes"}``.

        :raises AzureOpenAINotFoundError: no such file.
        """
        self._check_id(file_id, "file_id")
        path = f"files/{file_id}/content"
        if hasattr(destination, "open") and hasattr(destination, "fs"):
            with destination.open("wb") as out:
                size = self.client.download(path, out)
        else:
            target = os.fspath(destination)
            partial = f"{target}.part"
            try:
                with open(partial, "wb") as out:
                    size = self.client.download(path, out)
            except BaseException:
                if os.path.exists(partial):
                    os.unlink(partial)
                raise
            os.replace(partial, target)
        return {"file_id": file_id, "destination": str(destination), "bytes": size}

    def wait_for_file(
        self,
        *,
        file_id: str,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        timeout: float = DEFAULT_WAIT_TIMEOUT,
    ) -> File:
        """Poll until the file is ``processed`` and return it.

        :raises AzureOpenAIFileProcessingError: the file ended in ``error`` (with ``status_details``) or
            ``deleted``.
        :raises AzureOpenAIWaitTimeoutError: still not terminal after ``timeout`` seconds.
        """
        if poll_interval <= 0 or timeout <= 0:
            raise AzureOpenAIInvalidArgumentError("poll_interval/timeout", "must be positive")
        deadline = time.monotonic() + timeout
        while True:
            file = self.get_file(file_id=file_id)
            status = FileStatus.of(file)
            if status.is_terminal:
                if status.is_failure:
                    raise AzureOpenAIFileProcessingError(file)
                return file
            if time.monotonic() + poll_interval > deadline:
                raise AzureOpenAIWaitTimeoutError(
                    f"File {file_id} is still {status.value!r} after {timeout:.0f}s"
                )
            self.log.info("File %s is %s; checking again in %ss", file_id, status.value, poll_interval)
            time.sleep(poll_interval)

    # ------------------------------------------------------------------------------ uploads
    def create_upload(self, *, filename: str, purpose: str, total_bytes: int, mime_type: str) -> Upload:
        """Start a multipart Upload of ``total_bytes`` (at most 9 GiB); returns the Upload (``pending``)."""
        self._require("create_upload", self.surface.supports_uploads)
        self._check_text(filename, "filename")
        self._check_purpose(purpose, "create_upload")
        self._check_text(mime_type, "mime_type")
        if (
            isinstance(total_bytes, bool)
            or not isinstance(total_bytes, int)
            or not 0 < total_bytes <= MAX_UPLOAD_BYTES
        ):
            raise AzureOpenAIInvalidArgumentError(
                "total_bytes", f"must be an integer in [1, {MAX_UPLOAD_BYTES}]"
            )
        return self.client.request_json(
            "POST",
            "uploads",
            retry=Retry.CREATE,
            json={"filename": filename, "purpose": purpose, "bytes": total_bytes, "mime_type": mime_type},
        )

    def add_upload_part(self, *, upload_id: str, data: bytes, on_bytes: Any = None) -> UploadPart:
        """Add one part to an Upload; retried on transient failures (a stray duplicate part is never listed)."""
        self._require("add_upload_part", self.surface.supports_uploads)
        self._check_id(upload_id, "upload_id")
        if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) == 0:
            raise AzureOpenAIInvalidArgumentError("data", "must be non-empty bytes")
        body = MultipartBody(
            fields={}, file_field="data", filename="blob", size=len(data), data=data, on_bytes=on_bytes
        )
        return self.client.request_json("POST", f"uploads/{upload_id}/parts", body=body)

    def complete_upload(self, *, upload_id: str, part_ids: list[str], md5: str | None = None) -> Upload:
        """Complete an Upload with its parts in order; returns the Upload with its nested File."""
        self._require("complete_upload", self.surface.supports_uploads)
        self._check_id(upload_id, "upload_id")
        if (
            not isinstance(part_ids, list)
            or not part_ids
            or not all(isinstance(p, str) and p for p in part_ids)
        ):
            raise AzureOpenAIInvalidArgumentError("part_ids", "must be a non-empty list of part ids")
        body: dict[str, Any] = {"part_ids": part_ids}
        if md5 is not None:
            body["md5"] = md5
        return self.client.request_json(
            "POST", f"uploads/{upload_id}/complete", retry=Retry.CREATE, json=body
        )

    def cancel_upload(self, *, upload_id: str) -> Upload:
        """Cancel an Upload; its parts are discarded."""
        self._require("cancel_upload", self.surface.supports_uploads)
        return self.client.request_json("POST", f"uploads/{self._check_id(upload_id, 'upload_id')}/cancel")

    def upload_multipart(
        self,
        *,
        source: Any,
        purpose: str,
        filename: str | None = None,
        mime_type: str | None = None,
        part_size: int = DEFAULT_PART_BYTES,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        progress_interval: float = 5.0,
        stop: threading.Event | None = None,
        on_upload_created: Any = None,
    ) -> Upload:
        """Upload a file of up to 9 GiB: create an Upload, send parts in parallel, complete it with the md5.

        Memory stays near ``max_concurrency x part_size`` whatever the file size; the md5 is computed while
        reading (one pass). A part that keeps failing stops the upload, which is then cancelled, as it is
        when the task is killed (``stop`` set) or interrupted.

        :param on_upload_created: called with the upload id once it exists (operators use it for on_kill).
        :raises AzureOpenAIInvalidArgumentError: bad source, purpose, part_size or max_concurrency; nothing sent.
        :raises AzureOpenAIUploadError: the upload gave up and was cancelled.
        """
        self._require("upload_multipart", self.surface.supports_uploads)
        if (
            isinstance(max_concurrency, bool)
            or not isinstance(max_concurrency, int)
            or not 1 <= max_concurrency <= 32
        ):
            raise AzureOpenAIInvalidArgumentError("max_concurrency", "must be an integer from 1 to 32")
        opened, name = self._prepare_upload(source, purpose, filename, "create_upload", MAX_UPLOAD_BYTES)
        check_part_size(part_size, opened.size)
        mime_type = mime_type or ("text/jsonl" if name.endswith(".jsonl") else "application/octet-stream")

        upload = self.create_upload(
            filename=name, purpose=purpose, total_bytes=opened.size, mime_type=mime_type
        )
        upload_id = upload["id"]
        if on_upload_created is not None:
            on_upload_created(upload_id)
        progress = Progress(total=opened.size, interval=progress_interval, logger=self.log)
        self.log.info(
            "Upload %s: %s, %d bytes in parts of %d, %d in parallel",
            upload_id,
            opened.description,
            opened.size,
            part_size,
            max_concurrency,
        )

        def send_part(data: bytes) -> str:
            return self.add_upload_part(upload_id=upload_id, data=data, on_bytes=progress.add)["id"]

        try:
            part_ids, md5 = send_parts(
                source=opened,
                part_size=part_size,
                max_concurrency=max_concurrency,
                send_part=send_part,
                stop=stop,
            )
            completed = self.complete_upload(upload_id=upload_id, part_ids=part_ids, md5=md5)
        except BaseException as exc:
            self.cancel_upload_quietly(upload_id)
            if isinstance(exc, AzureOpenAIError) and not isinstance(exc, AzureOpenAIUploadError):
                raise AzureOpenAIUploadError(
                    f"Upload {upload_id} of {opened.description} failed and was cancelled: {exc}",
                    upload_id=upload_id,
                ) from exc
            raise
        self.log.info(
            "%s; upload %s completed as file %s", progress.describe(), upload_id, completed["file"]["id"]
        )
        return completed

    def cancel_upload_quietly(self, upload_id: str) -> None:
        """Cancel an upload, logging instead of raising when that fails (cleanup paths)."""
        try:
            self.cancel_upload(upload_id=upload_id)
            self.log.warning("Upload %s cancelled", upload_id)
        except AzureOpenAIError as exc:
            self.log.warning("Could not cancel upload %s: %s", upload_id, exc)
