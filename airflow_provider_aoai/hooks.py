"""AzureOpenAIHook: an Airflow ``aoai`` connection -> the Files service of Azure OpenAI or a Foundry project.

Every public method takes keyword arguments, checks all of them before any request and returns plain
JSON-able dicts shaped like the service's objects, ready for XCom. HTTP, retries and error mapping live in
:mod:`~airflow_provider_aoai.client`; reading the connection in :mod:`~airflow_provider_aoai.connection`;
sources and parts in :mod:`~airflow_provider_aoai.uploads`; resuming in
:mod:`~airflow_provider_aoai.multipart`;
local and object-storage destinations in :mod:`~airflow_provider_aoai.downloads`.
"""

from __future__ import annotations

import hashlib
import io
import threading
import time
from collections.abc import Callable
from functools import cached_property
from typing import IO, Any, cast

from airflow.providers.common.compat.sdk import AirflowNotFoundException, BaseHook

from airflow_provider_aoai.client import AzureOpenAIClient, MultipartBody, Retry
from airflow_provider_aoai.connection import build_client
from airflow_provider_aoai.credentials import mask_url_secrets
from airflow_provider_aoai.downloads import prepare_destination, write_download
from airflow_provider_aoai.exceptions import (
    AzureOpenAIConfigError,
    AzureOpenAIConflictError,
    AzureOpenAIError,
    AzureOpenAIFileProcessingError,
    AzureOpenAIInvalidArgumentError,
    AzureOpenAINotFoundError,
    AzureOpenAIResponseError,
    AzureOpenAIStoppedError,
    AzureOpenAIUnsupportedOperationError,
    AzureOpenAIWaitTimeoutError,
)
from airflow_provider_aoai.models import (
    ALL_PURPOSES,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_PART_BYTES,
    MAX_CONCURRENCY,
    MAX_FILE_BYTES,
    MAX_PART_BYTES,
    MAX_UPLOAD_BYTES,
    File,
    FileStatus,
    ObjectKind,
    Surface,
    Upload,
    UploadPart,
    purposes_for,
)
from airflow_provider_aoai.multipart import (
    CheckpointListener,
    KeepPolicy,
    ResumableUpload,
    find_completed_upload,
)
from airflow_provider_aoai.redaction import redact, redact_url
from airflow_provider_aoai.retention import prune_rule, select_files_to_prune
from airflow_provider_aoai.uploads import (
    PartContent,
    Progress,
    Source,
    UploadCheckpoint,
    check_jsonl_start,
    check_part_size,
    open_source,
    verify_content,
)
from airflow_provider_aoai.validation import (
    MIN_POLL_SECONDS,
    check_bool,
    check_choice,
    check_filename,
    check_http_url,
    check_id,
    check_ids,
    check_int,
    check_seconds,
    check_stop,
    check_text,
    check_unix_time,
)

DEFAULT_POLL_INTERVAL = 5.0
DEFAULT_WAIT_TIMEOUT = 60 * 60.0
# test_connection answers within this, whatever the connection's timeout: it is a question, not a job.
TEST_CONNECTION_TIMEOUT = 15.0
# A file the service created before its upload (or import) request was sent is never taken for its result;
# this much clock difference between the worker and the service is tolerated.
CLOCK_SKEW_SECONDS = 5


def _file(payload: dict[str, Any]) -> File:
    """A File as the service answered it, with ``status_details`` redacted: services echo URLs and keys."""
    file = cast(File, dict(payload))
    if isinstance(file.get("status_details"), str):
        file["status_details"] = redact(file["status_details"])
    return file


def _upload(payload: dict[str, Any]) -> Upload:
    upload = cast(Upload, dict(payload))
    nested = upload.get("file")
    if isinstance(nested, dict):
        upload["file"] = _file(cast(dict[str, Any], nested))
    return upload


class AzureOpenAIHook(BaseHook):
    """Talk to the Files service of an Azure OpenAI resource or an Azure AI Foundry project.

    The connection's host is the endpoint: ``https://<name>.openai.azure.com``,
    ``https://<name>.cognitiveservices.azure.com`` or ``https://<name>.services.ai.azure.com/api/projects/<p>``.
    The password is the api key; extras pick the api-version and the Entra ID auth mode (see the README).

    Errors every method may raise: :class:`AzureOpenAIConfigError` (unusable connection, naming the field),
    :class:`AzureOpenAICredentialError` (no Entra ID token), an :class:`AzureOpenAIAPIError` subclass per HTTP
    status (with code, message, target and request id) once retries are exhausted or when retrying could not
    help, :class:`AzureOpenAIResponseError` when a success answer is not the promised object, and
    :class:`AzureOpenAIConnectionError` when the service cannot be reached. Arguments are checked first:
    :class:`AzureOpenAIInvalidArgumentError` and :class:`AzureOpenAIUnsupportedOperationError` are raised
    before any request. No message carries a secret.

    :param aoai_conn_id: the Airflow connection id (type ``aoai``).
    """

    conn_name_attr = "aoai_conn_id"
    default_conn_name = "aoai_default"
    conn_type = "aoai"
    hook_name = "Azure OpenAI Files"

    def __init__(self, aoai_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.aoai_conn_id = check_text(aoai_conn_id, "aoai_conn_id", max_chars=250)

    @classmethod
    def from_client(cls, client: AzureOpenAIClient, aoai_conn_id: str = default_conn_name) -> AzureOpenAIHook:
        """A hook that sends its requests through ``client`` (one shared by the triggers of a process, see
        :mod:`~airflow_provider_aoai.clients`) instead of building its own from the connection."""
        hook = cls(aoai_conn_id=aoai_conn_id)
        hook.__dict__["client"] = client  # what the cached property would have built
        return hook

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
        """The HTTP client for this connection, built on first use (no request is sent).

        :raises AzureOpenAIConfigError: a connection field is missing or invalid (the message names it).
        """
        try:
            conn = self.get_connection(self.aoai_conn_id)
        except AirflowNotFoundException:
            raise AzureOpenAIConfigError(
                f"Connection {self.aoai_conn_id!r} is not defined (in the metadata database, an "
                f"AIRFLOW_CONN_{self.aoai_conn_id.upper()} variable or a secrets backend)"
            ) from None
        client = build_client(conn, self.aoai_conn_id)
        self.log.debug("Connection %s -> %s (%s)", self.aoai_conn_id, client.base_url, client.surface.value)
        return client

    @property
    def surface(self) -> Surface:
        return self.client.surface

    def get_conn(self) -> AzureOpenAIClient:
        return self.client

    def test_connection(self) -> tuple[bool, str]:
        """List files once to prove the endpoint, the credentials and the api-version work together.

        Never raises: every failure is ``(False, message)``. It does not retry and waits at most
        :data:`TEST_CONNECTION_TIMEOUT` seconds, so an unreachable endpoint answers at once, naming the
        endpoint and the cause (name not resolved, refused, timed out, TLS).
        """
        try:
            client = self.client
            # A per-read timeout does not bound an answer that trickles in: the deadline shuts the socket.
            deadline = threading.Timer(TEST_CONNECTION_TIMEOUT, client.abort_in_flight)
            deadline.daemon = True
            deadline.start()
            try:
                page = client.request_object(
                    "GET",
                    ("files",),
                    expect=ObjectKind.LIST,
                    max_retries=0,
                    timeout=min(client.timeout, TEST_CONNECTION_TIMEOUT),
                )
            finally:
                deadline.cancel()
        except AzureOpenAIError as exc:
            return False, str(exc)
        except Exception as exc:
            return False, redact(f"{type(exc).__name__}: {exc}")
        count = len(page["data"])
        more = "+" if page.get("has_more") else ""
        return True, redact(
            f"Connected to {client.base_url} ({client.surface.value}); {count}{more} file(s) visible."
        )

    def abort_in_flight(self) -> None:
        """Shut the sockets of requests under way (``on_kill``); a no-op before the client exists."""
        if "client" in self.__dict__:
            aborted = self.client.abort_in_flight()
            if aborted:
                self.log.info("Aborted %d request(s) in flight", aborted)

    # ------------------------------------------------------------------------------ checks
    def _require(self, operation: str, supported: bool) -> None:
        if not supported:
            raise AzureOpenAIUnsupportedOperationError(
                f"{operation} is not offered by the {self.surface.value} surface of connection "
                f"{self.aoai_conn_id!r}; use an Azure OpenAI resource endpoint for it."
            )

    def _check_purpose(self, purpose: Any, operation: str) -> str:
        return check_choice(purpose, "purpose", purposes_for(self.surface, operation))

    def _prepare_upload(
        self, source: Any, purpose: Any, filename: Any, operation: str, limit: int
    ) -> tuple[Source, str]:
        self._check_purpose(purpose, operation)
        if filename is not None:
            check_filename(filename)
        opened = open_source(source)
        if opened.size == 0:
            raise AzureOpenAIInvalidArgumentError("source", f"{opened.description} is empty")
        if opened.size > limit:
            raise AzureOpenAIInvalidArgumentError(
                "source",
                f"{opened.description} holds {opened.size} bytes; the limit for {operation} is {limit}",
            )
        name = filename if filename is not None else opened.name
        check_filename(name, "filename" if filename is not None else "source (its file name)")
        check_jsonl_start(opened, purpose)
        return opened, name

    def check_import_file(self, *, content_url: Any, filename: Any, purpose: Any) -> None:
        """Everything :meth:`import_file` checks before its request (operators call it before anything else).

        :raises AzureOpenAIInvalidArgumentError: bad URL, filename or purpose.
        :raises AzureOpenAIUnsupportedOperationError: the connection is not a data plane connection.
        """
        if isinstance(content_url, str):
            mask_url_secrets(content_url)
        check_http_url(content_url, "content_url")
        check_filename(filename)
        self._require("import_file", self.surface.supports_import)
        self._check_purpose(purpose, "import_file")

    def check_upload_file(self, *, source: Any, purpose: Any, filename: Any = None) -> tuple[Source, str]:
        """Everything :meth:`upload_file` checks before its request; returns the source and the name."""
        return self._prepare_upload(source, purpose, filename, "upload_file", MAX_FILE_BYTES)

    # ------------------------------------------------------------------------------ files
    def import_file(self, *, content_url: str, filename: str, purpose: str) -> File:
        """Create a file from a URL (e.g. a blob SAS URL); the service downloads it. Returns the File.

        The URL's query string (a SAS signature) is registered as a secret and never appears in messages.

        :raises AzureOpenAIInvalidArgumentError: bad URL, filename or purpose; nothing is sent.
        :raises AzureOpenAIUnsupportedOperationError: the connection is not a data plane connection.
        """
        self.check_import_file(content_url=content_url, filename=filename, purpose=purpose)
        file = self.client.request_object(
            "POST",
            ("files", "import"),
            expect=ObjectKind.FILE,
            retry=Retry.CREATE,
            json={"content_url": content_url, "filename": filename, "purpose": purpose},
        )
        self.log.info("Import of %s started as file %s", redact_url(content_url), file["id"])
        return _file(file)

    def upload_file(
        self, *, source: Any, purpose: str, filename: str | None = None, stop: threading.Event | None = None
    ) -> File:
        """Upload a file of up to 512 MiB in one request (``POST files``), streaming it. Returns the File.

        A source that changes while it is sent ends the request before its last byte, so the service never
        stores a truncated or mixed file.

        :param source: local path, ``file://``/fsspec URL, ``ObjectStoragePath`` or seekable binary file.
        :param stop: set it to abandon the request (the task is being killed).
        :raises AzureOpenAIInvalidArgumentError: missing, empty or oversized source; bad purpose or filename.
        :raises AzureOpenAISourceChangedError: the source changed while it was sent; nothing was stored.
        """
        check_stop(stop)
        opened, name = self.check_upload_file(source=source, purpose=purpose, filename=filename)
        fields = {"purpose": purpose}
        if self.surface is Surface.FOUNDRY:
            fields["filename"] = name

        def content() -> Any:
            # Checked before the closing boundary: a changed source never completes the body.
            if opened.fingerprint.marker is not None:
                yield from opened.read_range(0, opened.size)
                opened.check_unchanged()
                return
            # No modification time or version to compare (an in-memory file object): the bytes sent must be
            # the bytes the source holds once they are sent.
            sent = hashlib.md5(usedforsecurity=False)
            for chunk in opened.read_range(0, opened.size):
                sent.update(chunk)
                yield chunk
            verify_content(opened, sent.hexdigest())

        body = MultipartBody(
            fields=fields, file_field="file", filename=name, size=opened.size, content=content, stop=stop
        )
        self.log.info("Uploading %s (%d bytes) as %s", opened.description, opened.size, name)
        file = self.client.request_object(
            "POST", ("files",), expect=ObjectKind.FILE, retry=Retry.CREATE, body=body, stop=stop
        )
        return _file(file)

    def get_file(self, *, file_id: str) -> File:
        """The File (or Foundry FileInfo) with its current status.

        :raises AzureOpenAINotFoundError: no such file.
        """
        check_id(file_id, "file_id")
        return _file(
            self.client.request_object("GET", ("files", file_id), expect=ObjectKind.FILE, expect_id=file_id)
        )

    def content_md5(self, *, file_id: str) -> str | None:
        """The md5 (hex) of a file's content, read from the service; ``None`` when it will not serve it.

        How a file is told apart from another of the same name and size (a lost answer's file).
        """
        check_id(file_id, "file_id")
        digest = hashlib.md5(usedforsecurity=False)

        class _Sink(io.RawIOBase):
            def writable(self) -> bool:
                return True

            def write(self, chunk: Any) -> int:
                digest.update(chunk)
                return len(chunk)

        try:
            self.client.download(("files", file_id, "content"), lambda: cast(IO[bytes], _Sink()))
        except AzureOpenAIError:
            return None
        return digest.hexdigest()

    def status_of(self, file: File) -> FileStatus:
        """The file's status on this connection's surface (Foundry may omit it: a stored file is ready)."""
        return FileStatus.of(file, status_optional=self.surface is Surface.FOUNDRY)

    def list_files(self, *, purpose: str | None = None) -> list[File]:
        """All files, optionally only those with ``purpose`` (following ``has_more`` pages where offered)."""
        params: dict[str, Any] = {}
        if purpose is not None:
            params["purpose"] = check_choice(purpose, "purpose", ALL_PURPOSES)
        files: list[File] = []
        while True:
            page = self.client.request_object("GET", ("files",), expect=ObjectKind.LIST, params=params)
            data = [_file(item) for item in page["data"]]
            files.extend(data)
            if not page.get("has_more") or not data:
                return files
            last = data[-1].get("id")
            if not isinstance(last, str) or last == params.get("after"):
                raise AzureOpenAIResponseError(
                    200, "unexpectedResponse", "the file list's paging does not advance"
                )
            params["after"] = last

    def delete_file(self, *, file_id: str) -> dict[str, Any]:
        """Delete a file; returns ``{"object": "file", "deleted": true, "id": ...}``.

        :raises AzureOpenAINotFoundError: no such file (or already deleted).
        """
        check_id(file_id, "file_id")
        return self.client.request_object(
            "DELETE", ("files", file_id), expect=ObjectKind.DELETION, expect_id=file_id
        )

    def download_file(
        self, *, file_id: str, destination: Any, stop: threading.Event | None = None
    ) -> dict[str, Any]:
        """Stream a file's content to ``destination``: a local file path or an ``ObjectStoragePath``.

        The content is written aside (a temporary file created exclusively in the destination's directory)
        and moved over the destination only once complete; on any failure the temporary file is removed and
        nothing else is touched. Returns ``{"file_id", "destination", "bytes"}``.

        :raises AzureOpenAIInvalidArgumentError: a bad id, or a destination that is not a file path in an
            existing, writable directory (checked before any request).
        :raises AzureOpenAINotFoundError: no such file (nothing is written).
        """
        check_id(file_id, "file_id")
        check_stop(stop)
        target = prepare_destination(destination)
        size = write_download(
            target, lambda open_out: self.client.download(("files", file_id, "content"), open_out, stop=stop)
        )
        return {"file_id": file_id, "destination": str(target), "bytes": size}

    def wait_for_file(
        self,
        *,
        file_id: str,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        timeout: float = DEFAULT_WAIT_TIMEOUT,
        stop: threading.Event | None = None,
    ) -> File:
        """Poll until the file is ``processed`` and return it.

        :param stop: set it to stop waiting at once (the task is being killed).
        :raises AzureOpenAIFileProcessingError: the file ended in ``error`` (with ``status_details``) or
            ``deleted``.
        :raises AzureOpenAIWaitTimeoutError: still not terminal after ``timeout`` seconds.
        """
        check_id(file_id, "file_id")
        check_stop(stop)
        poll_interval = check_seconds(
            poll_interval, "poll_interval", minimum=MIN_POLL_SECONDS, allow_zero=True
        )
        timeout = check_seconds(timeout, "timeout")
        deadline = time.monotonic() + timeout
        while True:
            file = self.get_file(file_id=file_id)
            status = self.status_of(file)
            if status.is_terminal:
                if status.is_failure:
                    raise AzureOpenAIFileProcessingError(file)
                return file
            if time.monotonic() + poll_interval > deadline:
                raise AzureOpenAIWaitTimeoutError(
                    f"File {file_id} is still {status.value!r} after {timeout:.0f}s"
                )
            self.log.info("File %s is %s; checking again in %ss", file_id, status.value, poll_interval)
            if stop is not None:
                if stop.wait(poll_interval):
                    raise AzureOpenAIStoppedError(
                        f"Stopped waiting for file {file_id}: the task is being killed"
                    )
            else:
                time.sleep(poll_interval)

    def find_files(
        self,
        *,
        filename: str,
        purpose: str,
        created_after: float,
        size: int | None = None,
        clock_skew: float = CLOCK_SKEW_SECONDS,
    ) -> list[File]:
        """Files named ``filename`` with ``purpose`` (and ``size`` bytes) created since ``created_after``.

        How a retry finds the file an interrupted create produced, and how a completed upload's File is
        found (the service offers no lookup by upload id). Deleted and failed files are left out.

        :param clock_skew: seconds of difference tolerated between the clock ``created_after`` was read
            from and the service's (0 when it comes from the service itself, e.g. an upload's ``created_at``).
        """
        check_filename(filename)
        check_unix_time(created_after, "created_after")
        found = []
        for file in self.list_files(purpose=purpose):
            created = file.get("created_at")
            if file.get("filename") != filename or not isinstance(created, (int, float)):
                continue
            if created + clock_skew < created_after or FileStatus.of(file).is_failure:
                continue
            if size is not None and file.get("bytes") not in (size, None):
                continue
            found.append(file)
        return found

    # ------------------------------------------------------------------------------ uploads
    def create_upload(
        self,
        *,
        filename: str,
        purpose: str,
        total_bytes: int,
        mime_type: str,
        stop: threading.Event | None = None,
    ) -> Upload:
        """Start a multipart Upload of ``total_bytes`` (at most 9 GiB); returns the Upload (``pending``)."""
        self._require("create_upload", self.surface.supports_uploads)
        check_filename(filename)
        self._check_purpose(purpose, "create_upload")
        check_text(mime_type, "mime_type", max_chars=255)
        check_int(total_bytes, "total_bytes", minimum=1, maximum=MAX_UPLOAD_BYTES)
        upload = self.client.request_object(
            "POST",
            ("uploads",),
            expect=ObjectKind.UPLOAD,
            retry=Retry.CREATE,
            json={"filename": filename, "purpose": purpose, "bytes": total_bytes, "mime_type": mime_type},
            stop=check_stop(stop),
        )
        return _upload(upload)

    def add_upload_part(
        self,
        *,
        upload_id: str,
        data: bytes | bytearray | memoryview | None = None,
        content: PartContent | None = None,
        size: int | None = None,
        on_bytes: Callable[[int], None] | None = None,
        stop: threading.Event | None = None,
    ) -> UploadPart:
        """Add one part to an Upload; retried on transient failures (a stray duplicate part is never listed).

        Give the part as ``data``, or as ``content`` (a callable returning a fresh iterator of exactly
        ``size`` bytes for every attempt, so a part streams from its source and is re-read on a retry).
        """
        self._require("add_upload_part", self.surface.supports_uploads)
        check_id(upload_id, "upload_id")
        check_stop(stop)
        if on_bytes is not None and not callable(on_bytes):
            raise AzureOpenAIInvalidArgumentError("on_bytes", "must be a callable (or None)")
        if data is not None:
            if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) == 0:
                raise AzureOpenAIInvalidArgumentError("data", "must be non-empty bytes")
            view = memoryview(data)
            size = len(view)

            def content() -> Any:
                for start in range(0, len(view), 1024 * 1024):
                    yield view[start : start + 1024 * 1024]

        elif content is None or not callable(content):
            raise AzureOpenAIInvalidArgumentError(
                "data", "give the part's bytes as data, or content and size"
            )
        check_int(size, "size", minimum=1, maximum=MAX_PART_BYTES)
        body = MultipartBody(
            fields={},
            file_field="data",
            filename="blob",
            size=cast(int, size),
            content=content,
            on_bytes=on_bytes,
            stop=stop,
        )
        part = self.client.request_object(
            "POST",
            ("uploads", upload_id, "parts"),
            expect=ObjectKind.PART,
            expect_parent=upload_id,
            body=body,
            stop=stop,
        )
        return cast(UploadPart, part)

    def complete_upload(
        self,
        *,
        upload_id: str,
        part_ids: list[str],
        md5: str | None = None,
        upload: Upload | None = None,
        stop: threading.Event | None = None,
    ) -> Upload:
        """Complete an Upload with its parts in order; returns the Upload with its nested File.

        ``complete`` is retried on transient failures (5xx, dropped connection, timeout): an upload completes
        at most once, so a repeat cannot make a second file. When the service answers 409 because an earlier
        attempt did complete it, the File is looked up by the upload's filename, purpose and size among the
        files created since the upload was (the service offers no lookup by upload id); pass the ``upload``
        as created (or as a checkpoint describes it) to allow that lookup.

        :raises AzureOpenAIConflictError: the upload is not pending (cancelled, expired, or completed with no
            file to be found).
        """
        self._require("complete_upload", self.surface.supports_uploads)
        check_id(upload_id, "upload_id")
        part_ids = check_ids(part_ids, "part_ids")
        body: dict[str, Any] = {"part_ids": part_ids}
        if md5 is not None:
            if (
                not isinstance(md5, str)
                or len(md5) != 32
                or any(c not in "0123456789abcdefABCDEF" for c in md5)
            ):
                raise AzureOpenAIInvalidArgumentError(
                    "md5", "must be the 32-character hex md5 digest of the file"
                )
            body["md5"] = md5.lower()
        try:
            completed = self.client.request_object(
                "POST",
                ("uploads", upload_id, "complete"),
                expect=ObjectKind.UPLOAD,
                expect_id=upload_id,
                json=body,
                stop=check_stop(stop),
            )
        except AzureOpenAIConflictError:
            if upload is None:
                raise
            found = find_completed_upload(self, upload, md5)
            if found is None:
                raise
            return found
        if completed.get("status") != "completed":
            raise AzureOpenAIResponseError(
                200,
                "unexpectedResponse",
                f"complete of upload {upload_id} answered status {completed.get('status')!r}",
            )
        return _upload(completed)

    def cancel_upload(self, *, upload_id: str) -> Upload:
        """Cancel an Upload; its parts are discarded. Cancelling a cancelled upload is harmless."""
        self._require("cancel_upload", self.surface.supports_uploads)
        check_id(upload_id, "upload_id")
        upload = self.client.request_object(
            "POST", ("uploads", upload_id, "cancel"), expect=ObjectKind.UPLOAD, expect_id=upload_id
        )
        return _upload(upload)

    def cancel_upload_quietly(self, upload_id: str) -> bool:
        """Cancel an upload, logging instead of raising when that fails (cleanup paths); True if cancelled."""
        try:
            self.cancel_upload(upload_id=upload_id)
        except AzureOpenAIError as exc:
            self.log.warning("Could not cancel upload %s: %s", upload_id, exc)
            return False
        self.log.warning("Upload %s cancelled", upload_id)
        return True

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
        on_upload_created: Callable[[str], None] | None = None,
        resume_from: UploadCheckpoint | dict[str, Any] | None = None,
        on_checkpoint: CheckpointListener | None = None,
        keep_on_failure: bool | KeepPolicy = False,
        on_md5: Callable[[str], None] | None = None,
    ) -> Upload:
        """Upload a file of up to 9 GiB: create (or resume) an Upload, send parts in parallel, complete it.

        The md5 of the source is computed alongside and verified by the service; the source's size and
        modification time (or etag/version) are checked before completing. Memory stays flat for local
        files whatever ``part_size`` and ``max_concurrency``; other sources hold at most
        ``max_concurrency`` parts in memory.

        Resuming: ``on_checkpoint(checkpoint, part_index)`` is told of every change (created, each part
        accepted, completed); persist ``checkpoint.to_json()`` anywhere and pass it back as ``resume_from``
        to a later call, which then sends only the parts not yet accepted, or returns the completed upload's
        File if it is still there. A checkpoint that no longer fits (the source, part size, name or endpoint
        changed, or the upload expired or was cancelled) starts a new upload and cancels the old one.

        Failures cancel the upload, unless ``keep_on_failure`` (a bool, or a callable deciding per exception)
        keeps one that a later call can resume (network trouble, 5xx/429 after the retries); a set ``stop``, a
        changed source and every other error always cancel it.

        :param on_upload_created: called with the upload id once it exists (or is resumed).
        :param on_md5: called once with the content's hex md5, after the last part and before completing
            (operators put it in their lineage).
        :raises AzureOpenAIInvalidArgumentError: bad source, purpose, part_size, ...; nothing is sent.
        :raises AzureOpenAIUploadError: the upload gave up (``.cancelled`` says whether it was cancelled).
        :raises AzureOpenAISourceChangedError: the source changed during the upload; it was cancelled.
        :raises AzureOpenAIStoppedError: ``stop`` was set; the upload was cancelled.
        """
        self._require("upload_multipart", self.surface.supports_uploads)
        check_stop(stop)
        for name, callback in (
            ("on_upload_created", on_upload_created),
            ("on_checkpoint", on_checkpoint),
            ("on_md5", on_md5),
        ):
            if callback is not None and not callable(callback):
                raise AzureOpenAIInvalidArgumentError(name, "must be a callable (or None)")
        check_int(max_concurrency, "max_concurrency", minimum=1, maximum=MAX_CONCURRENCY)
        check_seconds(progress_interval, "progress_interval", minimum=0, allow_zero=True)
        if mime_type is not None:
            check_text(mime_type, "mime_type", max_chars=255)
        if resume_from is not None:  # always a copy: the caller's checkpoint is never changed
            try:
                resume_from = UploadCheckpoint.from_json(
                    resume_from.to_json() if isinstance(resume_from, UploadCheckpoint) else resume_from
                )
            except ValueError as exc:
                raise AzureOpenAIInvalidArgumentError("resume_from", str(exc)) from None
        if not (isinstance(keep_on_failure, bool) or callable(keep_on_failure)):
            raise AzureOpenAIInvalidArgumentError("keep_on_failure", "must be a bool or a callable")
        opened, name = self._prepare_upload(source, purpose, filename, "create_upload", MAX_UPLOAD_BYTES)
        check_part_size(part_size, opened.size)
        mime_type = mime_type or ("text/jsonl" if name.endswith(".jsonl") else "application/octet-stream")
        self.log.info(
            "Multipart upload of %s: %d bytes in parts of %d, %d in parallel",
            opened.description,
            opened.size,
            part_size,
            max_concurrency,
        )
        return ResumableUpload(
            self,
            source=opened,
            filename=name,
            purpose=purpose,
            mime_type=mime_type,
            part_size=part_size,
            max_concurrency=max_concurrency,
            progress=Progress(total=opened.size, interval=float(progress_interval), logger=self.log),
            stop=stop,
            resume_from=resume_from,
            on_checkpoint=on_checkpoint,
            keep_on_failure=keep_on_failure,
            on_upload_created=on_upload_created,
            on_md5=on_md5,
        ).run()

    # ------------------------------------------------------------------------------ lifecycle: delete, prune
    def ensure_file_deleted(self, *, file_id: str, fail_if_missing: bool = False) -> dict[str, Any]:
        """Delete a file; one that is already gone counts as done unless ``fail_if_missing``.

        A 404 on the delete is taken for "no such file" only once a list of files on the same connection
        succeeds, so a wrong endpoint or api-version (404 on every call) still fails.

        :returns: the service's deletion object ``{"object": "file", "id": ..., "deleted": true}``; for a
            file that did not exist, ``{"object": "file", "id": ..., "deleted": false}`` (nothing deleted).
        :raises AzureOpenAIInvalidArgumentError: a malformed ``file_id`` or a non-bool ``fail_if_missing``;
            nothing is sent.
        :raises AzureOpenAINotFoundError: no such file and ``fail_if_missing``, or the endpoint answers 404
            to everything.
        """
        check_id(file_id, "file_id")
        check_bool(fail_if_missing, "fail_if_missing")
        try:
            return self.delete_file(file_id=file_id)
        except AzureOpenAINotFoundError:
            if fail_if_missing:
                raise
            try:
                self.client.request_object("GET", ("files",), expect=ObjectKind.LIST, params={"limit": 1})
            except AzureOpenAINotFoundError:
                raise AzureOpenAINotFoundError(
                    404,
                    "notFound",
                    f"Connection {self.aoai_conn_id!r} answers 404 to listing files too: check the endpoint "
                    "and api_version; nothing was deleted",
                ) from None
            self.log.info("File %s does not exist (already deleted?); nothing to delete", file_id)
            return {"object": "file", "id": file_id, "deleted": False}

    def prune_files(
        self,
        *,
        purpose: str,
        older_than: Any,
        filename_prefix: str | None = None,
        keep_latest: int = 0,
        dry_run: bool = False,
        now: Any = None,
    ) -> list[str]:
        """Delete the files of one purpose that are older than ``older_than``, keeping the newest ones.

        The rule lives in :mod:`~airflow_provider_aoai.retention`. A file that is gone by the time it is
        deleted (another run, a retry) is skipped, not an error, so a prune is safe to retry.

        :param purpose: required, so that one call never spans purposes (e.g. ``fine-tune``).
        :param older_than: required ``datetime.timedelta``, zero or more (``timedelta(days=30)``).
        :param filename_prefix: only files whose name starts with it.
        :param keep_latest: how many of the newest candidates to keep, 0 or more.
        :param dry_run: list what would be deleted and delete nothing.
        :param now: the time ages are measured from (timezone-aware); defaults to the current time.
        :returns: the ids deleted (with ``dry_run``, those that would be), oldest first.
        :raises AzureOpenAIInvalidArgumentError: a missing or bad argument; nothing is sent.
        """
        rule = prune_rule(
            purpose=purpose,
            older_than=older_than,
            filename_prefix=filename_prefix,
            keep_latest=keep_latest,
            now=now,
        )
        check_bool(dry_run, "dry_run")
        candidates, doomed = select_files_to_prune(self.list_files(purpose=rule.purpose), rule)
        self.log.info(
            "%d candidate file(s) for %s: %d %s",
            len(candidates),
            rule.describe(),
            len(doomed),
            "would be deleted (dry run)" if dry_run else "to delete",
        )
        deleted: list[str] = []
        for file in doomed:
            file_id = check_id(file.get("id"), "id")
            if not dry_run:
                try:
                    self.delete_file(file_id=file_id)
                except AzureOpenAINotFoundError:
                    self.log.info("File %s is already gone", file_id)
                    continue
            self.log.info(
                "%s %s (%s, created at %s)",
                "Would delete" if dry_run else "Deleted",
                file_id,
                file.get("filename"),
                file["created_at"],
            )
            deleted.append(file_id)
        return deleted
