"""Handlers of the service's operations on files and uploads, shared by the surfaces.

Each handler gets the request (already past the api-version and auth checks) and its surface, and answers
the surface's status codes, headers and bodies (as each backend answers them, :mod:`.backends`); rule
violations are :class:`StoreError` raised here or by the store.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response, StreamingResponse

from airflow_provider_aoai.emulator import backends
from airflow_provider_aoai.emulator.bodies import checked_purpose, read_form, read_json, required_field
from airflow_provider_aoai.emulator.errors import bad
from airflow_provider_aoai.models import Surface, expiry_range, offers_expiry

if TYPE_CHECKING:
    from starlette.requests import Request

    from airflow_provider_aoai.emulator.store import Store

CONTENT_CHUNK = 1024 * 1024
MAX_LIST_LIMIT = 10_000
# A project's OpenAI route pages a list without ``limit`` (recorded: has_more on such a list); how many
# per page is our decision, OpenAI's page size of its assistants-style lists.
FOUNDRY_OPENAI_PAGE = 20
# A file created on a project's OpenAI route is located on its resource's data plane, at this version
# (recorded, .NET: https://<resource>.openai.azure.com/openai/files/<id>?api-version=2025-03-01-preview).
PROJECT_LOCATION_API_VERSION = "2025-03-01-preview"
# A file name that goes into Content-Disposition as it is (an RFC 7230 token).
_TOKEN = re.compile(r"[A-Za-z0-9!#$&+\-.^_`|~]+")


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` value takes gzip: ``gzip`` (or ``x-gzip``, or ``*``) with a q above 0;
    an explicit ``gzip;q=0`` refuses it whatever ``*`` says."""
    explicit: float | None = None
    wildcard: float | None = None
    for item in accept_encoding.split(","):
        coding, *params = (part.strip() for part in item.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if coding.lower() in ("gzip", "x-gzip"):
            explicit = quality
        elif coding == "*":
            wildcard = quality
    chosen = explicit if explicit is not None else wildcard
    return chosen is not None and chosen > 0


def content_disposition(filename: str) -> str:
    """``attachment; filename=<name>; filename*=UTF-8''<name>``, as recorded; a name that is not a plain
    token goes quoted, with ``_`` for what is not printable ASCII, and percent-encoded in ``filename*``
    (RFC 6266)."""
    if _TOKEN.fullmatch(filename):
        plain = filename
    else:
        plain = '"' + "".join(c if " " <= c <= "~" and c not in '"\\' else "_" for c in filename) + '"'
    return f"attachment; filename={plain}; filename*=UTF-8''{quote(filename, safe='!#$&+-.^_`|~')}"


def checked_expiry(request: Request, surface: Surface, purpose: str, value: Any) -> int | None:
    """A create's ``expires_after`` (``{"anchor": "created_at", "seconds": N}``), checked as the service
    checks it: where it is offered (:func:`offers_expiry`), its anchor, the purpose's range."""
    if value is None:
        return None
    version = request.query_params.get("api-version") or ""
    if not offers_expiry(surface, version or None):
        raise bad(f"expires_after is not supported in api-version '{version}'.", "expires_after")
    if not isinstance(value, dict) or value.get("anchor") != "created_at":
        raise bad("expires_after must be an object with anchor 'created_at' and seconds.", "expires_after")
    seconds = value.get("seconds")
    if isinstance(seconds, str) and seconds.isdigit():
        seconds = int(seconds)
    low, high = expiry_range(purpose)
    if isinstance(seconds, bool) or not isinstance(seconds, int) or not low <= seconds <= high:
        raise bad(
            f"expires_after.seconds must be between {low} and {high} for purpose '{purpose}'.",
            "expires_after",
        )
    return seconds


def form_expiry(fields: dict[str, str]) -> dict[str, str] | None:
    """``expires_after`` of a multipart form: ``expires_after[anchor]``/``[seconds]`` as the openai SDK
    flattens it, or ``expires_after.anchor``/``.seconds`` as Azure's curl examples send it."""
    found = {
        key: fields[name]
        for key in ("anchor", "seconds")
        for name in (f"expires_after[{key}]", f"expires_after.{key}")
        if name in fields
    }
    return found or None


class FilesEndpoints:
    """``/files`` and ``/uploads`` of every surface over one :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # ---------------------------------------------------------------- answers
    @staticmethod
    def _created(request: Request, surface: Surface, file: dict[str, Any]) -> tuple[int, dict[str, str]]:
        """Status and headers of a file create's answer, as recorded: the assistants backend answers 200
        (with its request id), the Azure files backend 201 with ``Location`` on the data plane and on a
        project's OpenAI route (the resource's data plane URL); v1 and the agents route always 200."""
        if backends.is_assistants_file(file["id"]):
            return 200, {backends.ASSISTANTS_MARK: "1"}
        if surface not in (Surface.DATA_PLANE, Surface.FOUNDRY_OPENAI):
            return 200, {}
        base = str(request.base_url).rstrip("/")
        version = (
            request.query_params["api-version"]
            if surface is Surface.DATA_PLANE
            else PROJECT_LOCATION_API_VERSION
        )
        query = urlencode({"api-version": version})
        return 201, {"Location": f"{base}/openai/files/{quote(file['id'], safe='')}?{query}"}

    @staticmethod
    def _file_body(surface: Surface, file: dict[str, Any]) -> dict[str, Any]:
        if surface is Surface.FOUNDRY and file.get("bytes") is None:
            file = {**file, "bytes": 0}  # FileInfo.bytes is required
        return file

    @staticmethod
    def _read_answer(request: Request, surface: Surface, body: dict[str, Any]) -> Response:
        """The JSON answer of a read or a delete. A project's OpenAI route compresses it when the request
        takes gzip (recorded: ``Content-Encoding: gzip`` and ``Vary: Accept-Encoding`` on its GET, list and
        DELETE answers, never on a create or a download)."""
        if surface is not Surface.FOUNDRY_OPENAI:
            return JSONResponse(body)
        content = JSONResponse(body).body
        headers = {"Vary": "Accept-Encoding"}
        if accepts_gzip(request.headers.get("accept-encoding", "")):
            content = gzip.compress(content)
            headers["Content-Encoding"] = "gzip"
        return Response(content, headers=headers, media_type="application/json")

    # ---------------------------------------------------------------- files

    async def create_file(self, request: Request, surface: Surface) -> Response:
        form = await read_form(
            request, self.store, file_field="file", max_bytes=self.store.limits.max_file_bytes
        )
        try:
            purpose = checked_purpose(required_field(form.fields, "purpose"), surface, "upload_file")
            expires_after = checked_expiry(request, surface, purpose, form_expiry(form.fields))
            upload = form.files.get("file")
            if upload is None:
                raise bad("Missing required field 'file'.", "file")
            filename = form.fields.get("filename") if surface is Surface.FOUNDRY else None
            filename = filename or upload.filename
            if not filename:
                raise bad("The 'file' part needs a filename.", "file")
            file = await run_in_threadpool(
                self.store.create_file,
                source=upload.path,
                filename=filename,
                purpose=purpose,
                expires_after=expires_after,
            )
        finally:
            for form_file in form.files.values():
                form_file.path.unlink(missing_ok=True)
        status, headers = self._created(request, surface, file)
        return JSONResponse(self._file_body(surface, file), status_code=status, headers=headers)

    async def import_file(self, request: Request, surface: Surface) -> Response:
        document = await read_json(request)
        purpose = checked_purpose(required_field(document, "purpose"), surface, "import_file")
        filename = required_field(document, "filename")
        content_url = required_field(document, "content_url")
        if not content_url.lower().startswith(("https://", "http://")):
            raise bad("content_url must be an http(s) URL.", "content_url")
        file = self.store.import_file(content_url=content_url, filename=filename, purpose=purpose)
        # As the spec's example: a Location without the api-version (no recording shows an import).
        base = str(request.base_url).rstrip("/")
        return JSONResponse(
            file, status_code=201, headers={"Location": f"{base}/openai/files/{quote(file['id'], safe='')}"}
        )

    async def list_files(self, request: Request, surface: Surface) -> Response:
        # The specs list no paging parameters; the service (and the OpenAI SDK's auto-paging) uses the
        # OpenAI cursor parameters ``after`` and ``limit``, so those are honoured too.
        purpose = request.query_params.get("purpose") or None
        files = [self._file_body(surface, f) for f in self.store.list_files(purpose)]
        openai_route = surface is Surface.FOUNDRY_OPENAI
        if openai_route:
            # Newest first, each file in the assistants backend's shape (recorded: a fine-tune file listed
            # with expires_at and status_details null); ``order`` as OpenAI's files API takes it.
            order = request.query_params.get("order", "desc")
            if order not in ("asc", "desc"):
                raise bad("order must be 'asc' or 'desc'.", "order")
            if order == "desc":
                files.reverse()
            files = [backends.shaped(f, assistants=True) for f in files]
        after = request.query_params.get("after")
        if after:
            ids = [f["id"] for f in files]
            files = files[ids.index(after) + 1 :] if after in ids else []
        default_limit = FOUNDRY_OPENAI_PAGE if openai_route else MAX_LIST_LIMIT
        try:
            limit = int(request.query_params.get("limit", str(default_limit)))
        except ValueError:
            raise bad("limit must be an integer.", "limit") from None
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise bad(f"limit must be between 1 and {MAX_LIST_LIMIT}.", "limit")
        has_more = len(files) > limit
        files = files[:limit]
        body: dict[str, Any] = {"object": "list", "data": files}
        if surface in (Surface.V1, Surface.FOUNDRY_OPENAI):
            body.update(
                has_more=has_more,
                first_id=files[0]["id"] if files else None,
                last_id=files[-1]["id"] if files else None,
            )
        return self._read_answer(request, surface, body)

    async def get_file(self, request: Request, surface: Surface) -> Response:
        file = self._file_body(surface, self.store.get_file(request.path_params["file_id"]))
        return self._read_answer(request, surface, file)

    async def delete_file(self, request: Request, surface: Surface) -> Response:
        return self._read_answer(request, surface, self.store.delete_file(request.path_params["file_id"]))

    async def file_content(self, request: Request, surface: Surface) -> Response:
        download = self.store.open_download(request.path_params["file_id"])
        stream = download.stream
        headers = {"content-length": str(download.size)}
        if surface is Surface.FOUNDRY_OPENAI:  # recorded there; no data plane download is recorded
            headers["content-disposition"] = content_disposition(download.filename)
        if request.method == "HEAD":
            stream.close()
            return Response(media_type="application/octet-stream", headers=headers)

        def chunks() -> Iterator[bytes]:
            with stream:
                while chunk := stream.read(CONTENT_CHUNK):
                    yield chunk

        return StreamingResponse(chunks(), media_type="application/octet-stream", headers=headers)

    # ---------------------------------------------------------------- uploads
    async def create_upload(self, request: Request, surface: Surface) -> Response:
        document = await read_json(request)
        purpose = checked_purpose(required_field(document, "purpose"), surface, "create_upload")
        filename = required_field(document, "filename")
        size = required_field(document, "bytes", int)
        if size <= 0:
            raise bad("Field 'bytes' must be positive.", "bytes")
        mime_type = required_field(document, "mime_type")
        expires_after = checked_expiry(request, surface, purpose, document.get("expires_after"))
        upload = self.store.create_upload(
            filename=filename, purpose=purpose, size=size, mime_type=mime_type, expires_after=expires_after
        )
        # 200 without Location, as recorded (the spec's example has .../uploads/runs/{id}; the recording
        # wins).
        return JSONResponse(upload)

    async def add_part(self, request: Request, surface: Surface) -> Response:
        upload_id = request.path_params["upload_id"]
        self.store.check_part_allowed(upload_id)
        form = await read_form(
            request, self.store, file_field="data", max_bytes=self.store.limits.max_part_bytes
        )
        try:
            data = form.files.get("data")
            if data is None:
                raise bad("Missing required field 'data'.", "data")
            part = await run_in_threadpool(self.store.add_part, upload_id, data.path)
        finally:
            for form_file in form.files.values():
                form_file.path.unlink(missing_ok=True)
        return JSONResponse(part)

    async def complete(self, request: Request, surface: Surface) -> Response:
        document = await read_json(request)
        part_ids = required_field(document, "part_ids", list)
        if not isinstance(part_ids, list) or not part_ids or not all(isinstance(p, str) for p in part_ids):
            raise bad("Field 'part_ids' must be a non-empty list of strings.", "part_ids")
        md5 = document.get("md5")
        if md5 is not None and (not isinstance(md5, str) or len(md5) != 32):
            raise bad("Field 'md5' must be the 32-character hex md5 digest of the file.", "md5")
        upload = await run_in_threadpool(
            self.store.complete_upload, request.path_params["upload_id"], part_ids, md5
        )
        return JSONResponse(upload)

    async def cancel(self, request: Request, surface: Surface) -> Response:
        return JSONResponse(self.store.cancel_upload(request.path_params["upload_id"]))
