"""Handlers of the service's operations on files and uploads, shared by the three surfaces.

Each handler gets the request (already past the api-version and auth checks) and its surface, and answers
the surface's status codes and bodies; rule violations are :class:`StoreError` raised here or by the store.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response, StreamingResponse

from airflow_provider_aoai.emulator.bodies import checked_purpose, read_form, read_json, required_field
from airflow_provider_aoai.emulator.errors import bad
from airflow_provider_aoai.models import Surface

if TYPE_CHECKING:
    from starlette.requests import Request

    from airflow_provider_aoai.emulator.store import Store

CONTENT_CHUNK = 1024 * 1024


class FilesEndpoints:
    """``/files`` and ``/uploads`` of every surface over one :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # ---------------------------------------------------------------- files
    @staticmethod
    def _location(request: Request, surface: Surface, kind: str, object_id: str) -> dict[str, str]:
        if surface is not Surface.DATA_PLANE:
            return {}
        base = str(request.base_url).rstrip("/")
        # The spec's example answers POST /uploads with Location .../openai/uploads/runs/{id}.
        middle = "uploads/runs" if kind == "upload" else "files"
        return {"Location": f"{base}/openai/{middle}/{object_id}"}

    @staticmethod
    def _file_body(surface: Surface, file: dict[str, Any]) -> dict[str, Any]:
        if surface is Surface.FOUNDRY and file.get("bytes") is None:
            file = {**file, "bytes": 0}  # FileInfo.bytes is required
        return file

    async def create_file(self, request: Request, surface: Surface) -> Response:
        form = await read_form(
            request, self.store, file_field="file", max_bytes=self.store.limits.max_file_bytes
        )
        try:
            purpose = checked_purpose(required_field(form.fields, "purpose"), surface, "upload_file")
            upload = form.files.get("file")
            if upload is None:
                raise bad("Missing required field 'file'.", "file")
            filename = form.fields.get("filename") if surface is Surface.FOUNDRY else None
            filename = filename or upload.filename
            if not filename:
                raise bad("The 'file' part needs a filename.", "file")
            file = await run_in_threadpool(
                self.store.create_file, source=upload.path, filename=filename, purpose=purpose
            )
        finally:
            for form_file in form.files.values():
                form_file.path.unlink(missing_ok=True)
        status = 201 if surface is Surface.DATA_PLANE else 200
        return JSONResponse(
            self._file_body(surface, file),
            status_code=status,
            headers=self._location(request, surface, "file", file["id"]),
        )

    async def import_file(self, request: Request, surface: Surface) -> Response:
        document = await read_json(request)
        purpose = checked_purpose(required_field(document, "purpose"), surface, "import_file")
        filename = required_field(document, "filename")
        content_url = required_field(document, "content_url")
        if not content_url.lower().startswith(("https://", "http://")):
            raise bad("content_url must be an http(s) URL.", "content_url")
        file = self.store.import_file(content_url=content_url, filename=filename, purpose=purpose)
        return JSONResponse(
            file, status_code=201, headers=self._location(request, surface, "file", file["id"])
        )

    async def list_files(self, request: Request, surface: Surface) -> Response:
        # The specs list no paging parameters; the service (and the OpenAI SDK's auto-paging) uses the
        # OpenAI cursor parameters ``after`` and ``limit``, so those are honoured too.
        purpose = request.query_params.get("purpose") or None
        files = [self._file_body(surface, f) for f in self.store.list_files(purpose)]
        after = request.query_params.get("after")
        if after:
            ids = [f["id"] for f in files]
            files = files[ids.index(after) + 1 :] if after in ids else []
        try:
            limit = int(request.query_params.get("limit", "10000"))
        except ValueError:
            raise bad("limit must be an integer.", "limit") from None
        if not 1 <= limit <= 10000:
            raise bad("limit must be between 1 and 10000.", "limit")
        has_more = len(files) > limit
        files = files[:limit]
        body: dict[str, Any] = {"object": "list", "data": files}
        if surface is Surface.V1:
            body.update(
                first_id=files[0]["id"] if files else None,
                last_id=files[-1]["id"] if files else None,
                has_more=has_more,
            )
        return JSONResponse(body)

    async def get_file(self, request: Request, surface: Surface) -> Response:
        return JSONResponse(self._file_body(surface, self.store.get_file(request.path_params["file_id"])))

    async def delete_file(self, request: Request, surface: Surface) -> Response:
        return JSONResponse(self.store.delete_file(request.path_params["file_id"]))

    async def file_content(self, request: Request, surface: Surface) -> Response:
        stream, size = self.store.open_content(request.path_params["file_id"])
        headers = {"content-length": str(size)}
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
        upload = self.store.create_upload(filename=filename, purpose=purpose, size=size, mime_type=mime_type)
        return JSONResponse(upload, headers=self._location(request, surface, "upload", upload["id"]))

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
