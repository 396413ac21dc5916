"""Files: create one (from a URL, or in one streamed request), read, list, delete, download, wait, find.

Every public method takes keyword arguments, checks all of them before any request and returns plain
JSON-able dicts shaped like the service's objects. A create is checked once: ``prepare_*`` turns the
arguments into a request value (raising :class:`AzureOpenAIInvalidArgumentError` naming the argument), and
``send_*`` sends it unchanged, so an operator can check, look for an earlier try's file, then send.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_provider_aoai.credentials import mask_url_secrets
from airflow_provider_aoai.datasets import check_jsonl_start, scan_dataset
from airflow_provider_aoai.downloads import prepare_destination, write_download
from airflow_provider_aoai.exceptions import (
    AzureOpenAIDatasetError,
    AzureOpenAIError,
    AzureOpenAIFileProcessingError,
    AzureOpenAIInvalidArgumentError,
    AzureOpenAINotFoundError,
    AzureOpenAIResponseError,
)
from airflow_provider_aoai.http.forms import MultipartBody
from airflow_provider_aoai.http.policy import Retry
from airflow_provider_aoai.models import (
    ALL_PURPOSES,
    JSONL_PURPOSES,
    MAX_FILE_BYTES,
    MAX_UPLOAD_BYTES,
    File,
    FileOutcome,
    FileStatus,
    ObjectKind,
    Surface,
    file_outcome,
)
from airflow_provider_aoai.redaction import redact_url
from airflow_provider_aoai.resources.base import Resource, as_file
from airflow_provider_aoai.sources import Source, open_source, verify_content
from airflow_provider_aoai.validation import (
    check_bool,
    check_choice,
    check_filename,
    check_http_url,
    check_id,
    check_ids,
    check_stop,
    check_unix_time,
)

if TYPE_CHECKING:
    from airflow_provider_aoai.http.client import AzureOpenAIClient

# A file the service created before its upload (or import) request was sent is never taken for its result;
# this much clock difference between the worker and the service is tolerated.
CLOCK_SKEW_SECONDS = 5


@dataclass(frozen=True)
class ImportRequest:
    """A checked import: the service downloads ``content_url`` (whose query is registered as a secret)."""

    content_url: str
    filename: str
    purpose: str


@dataclass(frozen=True)
class UploadRequest:
    """A checked upload: the source opened, the name the file gets, when it expires (seconds after its
    creation, if ever)."""

    source: Source
    filename: str
    purpose: str
    expires_after: int | None = None
    md5: str | None = None  # the content's, when the check read it whole (a dataset's validation)


@dataclass(frozen=True)
class ContentMatch:
    """Which candidates hold a given content: the rule by which a lost answer's file is adopted.

    ``file`` is set only when exactly one candidate has the content: a file of the same name and size may
    be another task's, and a content read by nobody proves nothing.
    """

    matching: list[File]
    unreadable: list[str]

    @property
    def file(self) -> File | None:
        return self.matching[0] if len(self.matching) == 1 else None


def _checked_content(
    source: Any, purpose: str, filename: Any, operation: str, validate: Any
) -> tuple[Source, str, str | None]:
    """The source opened, the file's name and, when ``validate`` read it whole, the content's md5; the
    source not empty, within the limit of ``operation``, JSON Lines for those purposes, valid with
    ``validate``."""
    limit = MAX_FILE_BYTES if operation == "upload_file" else MAX_UPLOAD_BYTES
    if filename is not None:
        check_filename(filename)
    opened = open_source(source)
    if opened.size == 0:
        raise AzureOpenAIInvalidArgumentError("source", f"{opened.description} is empty")
    if opened.size > limit:
        raise AzureOpenAIInvalidArgumentError(
            "source", f"{opened.description} holds {opened.size} bytes; the limit for {operation} is {limit}"
        )
    name = filename if filename is not None else opened.name
    check_filename(name, "filename" if filename is not None else "source (its file name)")
    if not check_bool(validate, "validate") or purpose not in JSONL_PURPOSES:
        check_jsonl_start(opened, purpose)  # the cheap check; the full one below finds this and more
        return opened, name, None
    # A fine-tune file sent in parts may exceed the 512 MiB of one request.
    max_bytes = MAX_UPLOAD_BYTES if operation != "upload_file" and purpose == "fine-tune" else None
    scan = scan_dataset(opened, purpose, max_bytes=max_bytes, md5=True)
    if scan.problems:
        raise AzureOpenAIDatasetError("source", scan.problems)
    return opened, name, scan.md5


def _streamed(source: Source) -> Iterator[bytes | memoryview]:
    """The source's bytes, checked before the last is given: a changed source never completes a body."""
    if source.fingerprint.marker is not None:
        yield from source.read_range(0, source.size)
        source.check_unchanged()
        return
    # No modification time or version to compare (an in-memory file object): the bytes sent must be the
    # bytes the source holds once they are sent.
    sent = hashlib.md5(usedforsecurity=False)
    for chunk in source.read_range(0, source.size):
        sent.update(chunk)
        yield chunk
    verify_content(source, sent.hexdigest())


class _DigestSink:
    def __init__(self, digest: Any) -> None:
        self.digest = digest

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return len(data)


# The most pages one list may take: 200,000 files at the 20 a page of a project's OpenAI route, far more than
# a resource holds (100 fine-tune files, 10,000 batch files with an expiry). A list that pages on is refused.
MAX_LIST_PAGES = 10_000


def _wanted(item: dict[str, Any], ids: frozenset[str]) -> bool:
    file_id = item.get("id")
    return isinstance(file_id, str) and file_id in ids


class _OnlyFiles:
    """A JSON object hook for a page of the file list that keeps the files in ``ids``: every other file is
    replaced by :data:`DROPPED` the moment it is parsed, so its dict is freed at once and a list of thousands
    of files never holds thousands of dicts (why that matters to a triggerer:
    :mod:`airflow_provider_aoai.polling`).

    The hook sees objects, not where they stand: :meth:`only_items` tells whether every file it dropped was
    an item of the page's ``data`` (not an object inside a kept file, or beside ``data``)."""

    DROPPED: ClassVar[dict[str, Any]] = {"object": "file"}  # one object for them all, never handed out

    def __init__(self, ids: frozenset[str]) -> None:
        self.ids = ids
        self.dropped = 0
        self.last_dropped: Any = None  # the id of the last file dropped: the cursor, if it ends the page

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        if item.get("object") != "file" or _wanted(item, self.ids):
            return item  # the list itself, a wanted file, or an object in a file (items: see _listed)
        self.dropped += 1
        self.last_dropped = item.get("id")
        return self.DROPPED

    def only_items(self, items: list[Any]) -> bool:
        return self.dropped == sum(1 for item in items if item is self.DROPPED)


def _listed(
    client: AzureOpenAIClient, params: dict[str, Any], wanted: frozenset[str] | None
) -> Iterator[File]:
    """The files of every page of ``GET files`` (those in ``wanted`` only, unless it is ``None``)."""
    cursors: set[str] = set()
    while True:
        only = None if wanted is None else _OnlyFiles(wanted)
        page = client.request_object(
            "GET", ("files",), expect=ObjectKind.LIST, params=params, object_hook=only
        )
        if only is not None and not only.only_items(page["data"]):
            # A file object stood somewhere else and was dropped there: read the page again, whole.
            only = None
            page = client.request_object("GET", ("files",), expect=ObjectKind.LIST, params=params)
        items = page["data"]
        yield from (as_file(item) for item in items if wanted is None or _wanted(item, wanted))
        if not page.get("has_more") or not items:
            return
        last = only.last_dropped if only is not None and items[-1] is only.DROPPED else items[-1].get("id")
        if not isinstance(last, str) or last in cursors:
            raise AzureOpenAIResponseError(
                200, "unexpectedResponse", "the file list's paging does not advance"
            )
        if len(cursors) >= MAX_LIST_PAGES:
            raise AzureOpenAIResponseError(
                200, "unexpectedResponse", f"the file list goes on for more than {MAX_LIST_PAGES:,} pages"
            )
        cursors.add(last)
        params["after"] = last


class Files(Resource):
    """The Files service of one connection (data plane, v1 or Foundry project)."""

    # ------------------------------------------------------------------ creates
    def prepare_import(self, *, content_url: Any, filename: Any, purpose: Any) -> ImportRequest:
        """Check an import before any request.

        :raises AzureOpenAIInvalidArgumentError: bad URL, filename or purpose.
        :raises AzureOpenAIUnsupportedOperationError: the connection is not a data plane connection.
        """
        if isinstance(content_url, str):
            mask_url_secrets(content_url)
        check_http_url(content_url, "content_url")
        check_filename(filename)
        self.require("import_file", self.surface.supports_import)
        return ImportRequest(content_url, filename, self.check_purpose(purpose, "import_file"))

    def send_import(self, request: ImportRequest) -> File:
        file = self.client.request_object(
            "POST",
            ("files", "import"),
            expect=ObjectKind.FILE,
            retry=Retry.CREATE,
            json={
                "content_url": request.content_url,
                "filename": request.filename,
                "purpose": request.purpose,
            },
        )
        self.log.info("Import of %s started as file %s", redact_url(request.content_url), file["id"])
        return as_file(file)

    def import_file(self, *, content_url: str, filename: str, purpose: str) -> File:
        """Create a file from a URL (e.g. a blob SAS URL); the service downloads it. Returns the File.

        The URL's query string (a SAS signature) is registered as a secret and never appears in messages.

        :raises AzureOpenAIInvalidArgumentError: bad URL, filename or purpose; nothing is sent.
        :raises AzureOpenAIUnsupportedOperationError: the connection is not a data plane connection.
        """
        return self.send_import(
            self.prepare_import(content_url=content_url, filename=filename, purpose=purpose)
        )

    def prepare_upload(
        self,
        *,
        source: Any,
        purpose: Any,
        filename: Any = None,
        expires_after: Any = None,
        validate: bool = False,
        operation: str = "upload_file",
    ) -> UploadRequest:
        """Check an upload before any request: purpose, name, and the source (opened, not empty, within the
        limit of ``operation``: ``upload_file``, or ``create_upload`` for a multipart upload; JSON Lines for
        the JSON Lines purposes). With ``validate``, a ``batch`` or ``fine-tune`` dataset is read whole and
        checked against the service's rules (:func:`~airflow_provider_aoai.datasets.scan_dataset`); the same
        read gives the content's md5.

        :raises AzureOpenAIDatasetError: ``validate`` found problems; their codes and lines are in it.

        :raises AzureOpenAIInvalidArgumentError: naming the argument.
        """
        self.check_purpose(purpose, operation)
        seconds = self.check_expiry(expires_after, purpose)
        opened, name, md5 = _checked_content(source, purpose, filename, operation, validate)
        return UploadRequest(opened, name, purpose, seconds, md5)

    def send_upload(self, request: UploadRequest, *, stop: threading.Event | None = None) -> File:
        """Upload a checked request in one streamed ``POST files``; see :meth:`upload_file`."""
        source = request.source
        fields = {"purpose": request.purpose}
        if self.surface is Surface.FOUNDRY:  # the agents route takes the name as a field of its own
            fields["filename"] = request.filename
        if request.expires_after is not None:  # as the openai SDK flattens {"expires_after": {...}}
            fields["expires_after[anchor]"] = "created_at"
            fields["expires_after[seconds]"] = str(request.expires_after)
        body = MultipartBody(
            fields=fields,
            file_field="file",
            filename=request.filename,
            size=source.size,
            content=lambda: _streamed(source),
            stop=stop,
        )
        self.log.info("Uploading %s (%d bytes) as %s", source.description, source.size, request.filename)
        file = self.client.request_object(
            "POST", ("files",), expect=ObjectKind.FILE, retry=Retry.CREATE, body=body, stop=stop
        )
        return as_file(file)

    def upload_file(
        self,
        *,
        source: Any,
        purpose: str,
        filename: str | None = None,
        stop: threading.Event | None = None,
        expires_after: int | None = None,
        validate: bool = False,
    ) -> File:
        """Upload a file of up to 512 MiB in one request (``POST files``), streaming it. Returns the File.

        A source that changes while it is sent ends the request before its last byte, so the service never
        stores a truncated or mixed file.

        :param source: local path, ``file://``/fsspec URL, ``ObjectStoragePath`` or seekable binary file.
        :param stop: set it to abandon the request (the task is being killed).
        :param expires_after: the file expires this many seconds after its creation (batch input files: 14
            to 30 days, others 1 hour to 30 days); the File then carries ``expires_at``.
        :param validate: check a ``batch`` or ``fine-tune`` dataset against the service's rules first.
        :raises AzureOpenAIInvalidArgumentError: missing, empty or oversized source; bad purpose, filename or
            expires_after.
        :raises AzureOpenAIDatasetError: ``validate`` found problems; nothing was sent.
        :raises AzureOpenAISourceChangedError: the source changed while it was sent; nothing was stored.
        """
        check_stop(stop)
        request = self.prepare_upload(
            source=source, purpose=purpose, filename=filename, expires_after=expires_after, validate=validate
        )
        return self.send_upload(request, stop=stop)

    # ------------------------------------------------------------------ reads
    def get_file(self, *, file_id: str) -> File:
        """The File (or Foundry FileInfo) with its current status.

        :raises AzureOpenAINotFoundError: no such file.
        """
        check_id(file_id, "file_id")
        return as_file(
            self.client.request_object("GET", ("files", file_id), expect=ObjectKind.FILE, expect_id=file_id)
        )

    def status_of(self, file: File) -> FileStatus:
        """The file's status on this surface (Foundry may omit it: a stored file is ready)."""
        return FileStatus.of(file, status_optional=self.surface.status_optional)

    def settled(self, file: File) -> bool:
        """True when ``file`` is processed, False while it is still going (the rule: :func:`file_outcome`).

        :raises AzureOpenAIFileProcessingError: it ended in ``error`` or ``deleted``.
        """
        outcome = file_outcome(file, self.surface)
        if outcome is FileOutcome.FAILED:
            raise AzureOpenAIFileProcessingError(file)
        return outcome is FileOutcome.PROCESSED

    def content_md5(self, *, file_id: str) -> str | None:
        """The md5 (hex) of a file's content, read from the service; ``None`` when it will not serve it.

        How a file is told apart from another of the same name and size (a lost answer's file).
        """
        check_id(file_id, "file_id")
        digest = hashlib.md5(usedforsecurity=False)
        try:
            self.client.download(("files", file_id, "content"), lambda: _DigestSink(digest))
        except AzureOpenAIError:
            return None
        return digest.hexdigest()

    def list_files(self, *, purpose: str | None = None, ids: Sequence[str] | None = None) -> list[File]:
        """All files, optionally only those with ``purpose`` (following ``has_more`` pages where offered).

        :param ids: only the files with these ids, the others dropped as the answer is read: the statuses of
            many files in one request, in memory for those files only (the triggerer's polls read them so).
        """
        params: dict[str, Any] = {}
        if purpose is not None:
            params["purpose"] = check_choice(purpose, "purpose", ALL_PURPOSES)
        wanted = None if ids is None else frozenset(check_ids(ids, "ids"))
        return list(_listed(self.client, params, wanted))

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

    # ------------------------------------------------------------------ deletes
    def delete_file(self, *, file_id: str) -> dict[str, Any]:
        """Delete a file; returns the service's ``{"object": "file", "id": ..., "deleted": ...}``.

        ``deleted`` is false when the service deleted nothing: recorded live, a ``file-`` id deleted a second
        time answers 200 with ``"deleted": false`` (an ``assistant-`` id answers 404).

        :raises AzureOpenAINotFoundError: no such file (or already deleted, for some ids).
        """
        check_id(file_id, "file_id")
        return self.client.request_object(
            "DELETE", ("files", file_id), expect=ObjectKind.DELETION, expect_id=file_id
        )

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
            deletion = self.delete_file(file_id=file_id)
        except AzureOpenAINotFoundError:
            if fail_if_missing:
                raise
            try:
                self.client.request_object("GET", ("files",), expect=ObjectKind.LIST, params={"limit": 1})
            except AzureOpenAINotFoundError:
                connection = f"Connection {self.conn_id!r}" if self.conn_id else "The endpoint"
                raise AzureOpenAINotFoundError(
                    404,
                    "notFound",
                    f"{connection} answers 404 to listing files too: check the endpoint and api_version; "
                    "nothing was deleted",
                ) from None
            self.log.info("File %s does not exist (already deleted?); nothing to delete", file_id)
            return {"object": "file", "id": file_id, "deleted": False}
        if deletion.get("deleted") is not True:  # the service's own "nothing deleted" (a file- id, again)
            if fail_if_missing:
                raise AzureOpenAINotFoundError(
                    404, "notFound", f"File {file_id} was already deleted: the service deleted nothing"
                )
            self.log.info("File %s was already deleted; nothing to delete", file_id)
        return deletion

    # ------------------------------------------------------------------ finding what a lost answer created
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
            if created + clock_skew < created_after or file_outcome(file, self.surface) is FileOutcome.FAILED:
                continue
            if size is not None and file.get("bytes") not in (size, None):
                continue
            found.append(file)
        return found

    def match_content(self, candidates: list[File], md5: str) -> ContentMatch:
        """Which of ``candidates`` hold content whose md5 is ``md5`` (each is read from the service)."""
        digests = {str(f["id"]): self.content_md5(file_id=str(f["id"])) for f in candidates}
        return ContentMatch(
            [f for f in candidates if digests[str(f["id"])] == md5.lower()],
            [file_id for file_id, digest in digests.items() if digest is None],
        )
