"""The emulator's HTTP application: three surfaces of the Files service over one :class:`Store`.

Routes, status codes, bodies and headers follow ``shared/reference/specs``:

* data plane ``/openai/...?api-version=2024-10-21`` (azureopenai.json 2024-10-21): ErrorResponse bodies,
  201 + ``Location`` for file creation, 200 for uploads;
* v1 ``/openai/v1/...`` (azure-v1-v1-generated.json): AzureErrorResponse bodies, 200 for creation, list with
  ``first_id``/``last_id``/``has_more``; api-key, ``Authorization: Bearer <api key>`` or an Entra ID token;
* Foundry project ``/api/projects/{project}/files?api-version=v1`` (azure-ai-agents.json): AgentV1Error
  bodies, 200 FileInfo, Entra ID tokens only (the spec's only security scheme is OAuth2).

Request bodies stream through python-multipart straight into files under the data dir.
The outermost ASGI layer applies scripted faults, the simulated WAN link, request ids and the request log.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Match, Route

from airflow_provider_aoai.emulator.faults import FaultPlan, RequestRecord
from airflow_provider_aoai.emulator.store import Store, StoreError
from airflow_provider_aoai.models import Surface, purposes_for

# api-versions of the authoring spec family: with the Uploads API, and without it (files only).
UPLOADS_API_VERSIONS = frozenset(
    {
        "2024-08-01-preview",
        "2024-09-01-preview",
        "2024-10-01-preview",
        "2024-10-21",
        "2025-03-01-preview",
        "2025-04-01-preview",
    }
)
FILES_API_VERSIONS = UPLOADS_API_VERSIONS | {"2024-06-01", "2024-07-01-preview"}
V1_API_VERSIONS = frozenset({"v1", "preview"})
FOUNDRY_API_VERSIONS = frozenset({"v1"})

JSON_CONTENT_TYPES = ("application/json", "text/json")
MAX_JSON_BODY = 1024 * 1024
MAX_FORM_FIELD = 64 * 1024
STREAM_CHUNK = 1024 * 1024


@dataclass
class Identity:
    """The managed-identity token service (App Service flavour, api-version 2019-08-01)."""

    header_secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    token_lifetime_seconds: int = 3600
    client_id: str = "00000000-0000-0000-0000-00000000e1a1"
    tokens: dict[str, tuple[str, float]] = field(default_factory=dict)  # token -> (audience, expires_on)
    issued: int = 0
    # Entra ID (TLS mode): any tenant and client id; the secret or federated assertion must match these.
    client_secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    federated_token: str = field(default_factory=lambda: secrets.token_urlsafe(48))

    def issue(self, resource: str) -> dict[str, Any]:
        token = "emu." + secrets.token_urlsafe(32)
        expires_on = int(time.time()) + self.token_lifetime_seconds
        self.tokens[token] = (resource.rstrip("/"), expires_on)
        self.issued += 1
        return {
            "access_token": token,
            "expires_on": str(expires_on),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": self.client_id,
        }

    def audience_of(self, token: str) -> str | None:
        entry = self.tokens.get(token)
        if entry is None or entry[1] <= time.time():
            return None
        return entry[0]


# ------------------------------------------------------------------------------------------ errors
def error_response(surface: Surface, error: StoreError) -> JSONResponse:
    """``error`` in the surface's own body shape."""
    if surface is Surface.DATA_PLANE:
        body: dict[str, Any] = {"code": error.code, "message": error.message}
        if error.target:
            body["target"] = error.target
    elif surface is Surface.V1:
        body = {"code": error.code, "message": error.message, "param": error.target, "type": "error"}
    else:
        body = {
            "code": error.code,
            "message": error.message,
            "param": error.target,
            "type": "invalid_request_error" if error.status < 500 else "server_error",
        }
    return JSONResponse({"error": body}, status_code=error.status)


def _bad(message: str, target: str | None = None, status: int = 400) -> StoreError:
    return StoreError(status, "invalidPayload", message, target)


# ------------------------------------------------------------------------------------------ bodies
async def read_json(request: Request) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in JSON_CONTENT_TYPES and not (
        content_type.startswith("application/") and content_type.endswith("+json")
    ):
        raise _bad(f"Content-Type must be application/json, got {content_type or 'none'!r}.", status=415)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_JSON_BODY:
            raise _bad("The JSON body is too large.", status=413)
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _bad(f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(document, dict):
        raise _bad("The request body must be a JSON object.")
    return document


@dataclass
class FormFile:
    path: Path
    filename: str | None
    size: int


@dataclass
class Form:
    fields: dict[str, str]
    files: dict[str, FormFile]


async def read_form(request: Request, store: Store, *, file_field: str, max_bytes: int) -> Form:
    """Stream a multipart/form-data body: ``file_field`` to a file under the data dir, others to memory.

    Over-limit content is drained, not stored, so the client still receives our 4xx instead of a reset.
    """
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in params:
        raise _bad("Content-Type must be multipart/form-data with a boundary.", status=415)

    fields: dict[str, str] = {}
    files: dict[str, FormFile] = {}
    state: dict[str, Any] = {"headers": {}, "name": None, "sink": None, "size": 0, "error": None}
    header_field = bytearray()
    header_value = bytearray()

    def on_part_begin() -> None:
        state.update(headers={}, name=None, sink=None, size=0)

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_field.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        state["headers"][bytes(header_field).lower()] = bytes(header_value)
        header_field.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        _, disposition = parse_options_header(state["headers"].get(b"content-disposition", b""))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        state["name"] = name
        if name == file_field:
            path = store.incoming_path()
            filename = disposition.get(b"filename")
            state["file"] = FormFile(path, filename.decode("utf-8", "replace") if filename else None, 0)
            state["sink"] = path.open("wb")
        else:
            state["sink"] = bytearray()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        sink = state["sink"]
        length = end - start
        state["size"] += length
        if isinstance(sink, bytearray):
            if state["size"] > MAX_FORM_FIELD:
                state["error"] = state["error"] or _bad(f"Form field '{state['name']}' is too large.")
                return
            sink.extend(data[start:end])
        elif state["size"] > max_bytes:
            state["error"] = state["error"] or _bad(
                f"'{file_field}' exceeds the limit of {max_bytes} bytes.", file_field, status=413
            )
        elif sink is not None:
            sink.write(data[start:end])

    def on_part_end() -> None:
        sink = state["sink"]
        if isinstance(sink, bytearray):
            fields[state["name"]] = sink.decode("utf-8", "replace")
        elif sink is not None:
            sink.close()
            form_file = state["file"]
            form_file.size = state["size"]
            if state["name"] in files:
                files[state["name"]].path.unlink(missing_ok=True)
            files[state["name"]] = form_file
        state["sink"] = None

    parser = MultipartParser(
        params[b"boundary"],
        {
            "on_part_begin": on_part_begin,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
        },
    )
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except ValueError as exc:  # python-multipart's parse errors: a malformed body is the client's mistake
        state["error"] = state["error"] or _bad(f"Malformed multipart body: {exc}.")
    finally:
        if not isinstance(state["sink"], (bytearray, type(None))):
            state["sink"].close()
            state["file"].path.unlink(missing_ok=True)
    if state["error"] is not None:
        for form_file in files.values():
            form_file.path.unlink(missing_ok=True)
        raise state["error"]
    return Form(fields, files)


def _required(document: dict[str, Any], name: str, kind: type = str) -> Any:
    if name not in document or document[name] is None:
        raise _bad(f"Missing required field '{name}'.", name)
    value = document[name]
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise _bad(f"Field '{name}' must be an integer.", name)
    if kind is str and not isinstance(value, str):
        raise _bad(f"Field '{name}' must be a string.", name)
    if kind is str and not value.strip():
        raise _bad(f"Field '{name}' must not be empty.", name)
    return value


def _purpose(value: str, surface: Surface, operation: str) -> str:
    allowed = purposes_for(surface, operation)
    if value not in allowed:
        raise _bad(f"Unknown purpose '{value}'; expected one of: {', '.join(allowed)}.", "purpose")
    return value


# ------------------------------------------------------------------------------------------ the app
class EmulatorApp:
    """Builds the Starlette app; holds the store, auth settings, identity service and fault plan."""

    def __init__(
        self,
        store: Store,
        *,
        api_key: str | None,
        identity: Identity,
        faults: FaultPlan,
        blob_dir: Path,
    ) -> None:
        self.store = store
        self.api_key = api_key
        self.identity = identity
        self.faults = faults
        self.blob_dir = blob_dir
        self.starlette = Starlette(
            routes=self._routes(),
            exception_handlers={404: self._unknown_route, 405: self._unknown_route},
        )

    # ---------------------------------------------------------------- routing table
    def _routes(self) -> list[Route]:
        routes: list[Route] = []

        def add(path: str, method: str, operation: str, handler: Callable, surface: Surface) -> None:
            async def endpoint(request: Request) -> Response:
                return await self._dispatch(request, surface, operation, handler)

            routes.append(Route(path, endpoint, methods=[method], name=f"{surface.value}:{operation}"))

        prefixes = {
            Surface.V1: "/openai/v1",
            Surface.DATA_PLANE: "/openai",
            Surface.FOUNDRY: "/api/projects/{project}",
        }
        for surface, prefix in prefixes.items():
            add(f"{prefix}/files", "POST", "files.create", self.create_file, surface)
            add(f"{prefix}/files", "GET", "files.list", self.list_files, surface)
            if surface is Surface.DATA_PLANE:
                add(f"{prefix}/files/import", "POST", "files.import", self.import_file, surface)
            add(f"{prefix}/files/{{file_id}}", "GET", "files.get", self.get_file, surface)
            add(f"{prefix}/files/{{file_id}}", "DELETE", "files.delete", self.delete_file, surface)
            add(f"{prefix}/files/{{file_id}}/content", "GET", "files.content", self.file_content, surface)
            if surface.supports_uploads:
                add(f"{prefix}/uploads", "POST", "uploads.create", self.create_upload, surface)
                add(f"{prefix}/uploads/{{upload_id}}/parts", "POST", "uploads.parts", self.add_part, surface)
                add(
                    f"{prefix}/uploads/{{upload_id}}/complete",
                    "POST",
                    "uploads.complete",
                    self.complete,
                    surface,
                )
                add(f"{prefix}/uploads/{{upload_id}}/cancel", "POST", "uploads.cancel", self.cancel, surface)

        routes += [
            Route("/_emulator/identity/token", self.identity_token, methods=["GET"]),
            Route(
                "/{tenant}/v2.0/.well-known/openid-configuration", self.openid_configuration, methods=["GET"]
            ),
            Route("/{tenant}/oauth2/v2.0/token", self.entra_token, methods=["POST"]),
            Route("/_emulator/faults", self.control_faults, methods=["GET", "POST", "DELETE"]),
            Route("/_emulator/link", self.control_link, methods=["POST"]),
            Route("/_emulator/files/{file_id}/statuses", self.control_statuses, methods=["POST"]),
            Route("/_emulator/blobs/{name}", self.blob, methods=["GET", "PUT"]),
            Route("/_emulator/health", self.health, methods=["GET"]),
        ]
        return routes

    @staticmethod
    def surface_of(path: str) -> Surface:
        if path.startswith("/openai/v1/"):
            return Surface.V1
        return Surface.FOUNDRY if path.startswith("/api/projects/") else Surface.DATA_PLANE

    async def _unknown_route(self, request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        message = f"{request.method} {request.url.path} is not an operation of this service."
        return error_response(self.surface_of(request.url.path), StoreError(status, "notFound", message))

    def operation_for(self, scope: dict[str, Any]) -> str | None:
        for route in self.starlette.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL and route.name and ":" in route.name:
                return route.name.split(":", 1)[1]
        return None

    async def _dispatch(
        self, request: Request, surface: Surface, operation: str, handler: Callable
    ) -> Response:
        try:
            self._check_api_version(request, surface, operation)
            self._authenticate(request, surface)
            return await handler(request, surface)
        except StoreError as error:
            return error_response(surface, error)

    # ---------------------------------------------------------------- api-version and auth
    def _check_api_version(self, request: Request, surface: Surface, operation: str) -> None:
        version = request.query_params.get("api-version")
        if surface is Surface.V1:
            if version is not None and version not in V1_API_VERSIONS:
                raise _bad(
                    f"Unsupported api-version '{version}'; use 'v1' or 'preview' (or omit it).", "api-version"
                )
            return
        if surface is Surface.FOUNDRY:
            allowed = FOUNDRY_API_VERSIONS
        else:
            allowed = UPLOADS_API_VERSIONS if operation.startswith("uploads.") else FILES_API_VERSIONS
        if not version:
            raise _bad("The api-version query parameter is required.", "api-version")
        if version not in allowed:
            # The service answers an api-version it does not serve as an unknown resource.
            raise StoreError(
                404,
                "notFound",
                f"Resource not found: api-version '{version}' does not offer this operation.",
                "api-version",
            )

    def _key_matches(self, presented: str) -> bool:
        if self.api_key is None:
            return bool(presented)
        return hmac.compare_digest(presented.encode(), self.api_key.encode())

    def _authenticate(self, request: Request, surface: Surface) -> None:
        api_key = request.headers.get("api-key")
        authorization = request.headers.get("authorization", "")
        scheme, _, bearer = authorization.partition(" ")
        bearer = bearer.strip() if scheme.lower() == "bearer" else ""
        if surface is Surface.FOUNDRY and api_key is not None and not bearer:
            raise StoreError(
                401,
                "unauthorized",
                "Foundry project endpoints accept only Microsoft Entra ID bearer tokens "
                "(scope https://ai.azure.com/.default).",
            )
        if bearer:
            audience = self.identity.audience_of(bearer)
            if audience == surface.token_audience:
                return
            if audience is not None:
                raise StoreError(
                    401,
                    "unauthorized",
                    f"The bearer token's audience is not valid for this endpoint; expected {surface.token_audience}.",
                )
            # v1 also takes the api key as a bearer value (spec: ApiKeyAuth_ on the authorization header).
            if surface is Surface.V1 and self._key_matches(bearer):
                return
            raise StoreError(401, "unauthorized", "The bearer token is invalid or has expired.")
        if api_key is not None and surface is not Surface.FOUNDRY:
            if self._key_matches(api_key):
                return
            raise StoreError(
                401,
                "unauthorized",
                "Access denied due to invalid subscription key or wrong API endpoint.",
            )
        raise StoreError(
            401, "unauthorized", "Missing credentials: send an api-key header or a bearer token."
        )

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
            purpose = _purpose(_required(form.fields, "purpose"), surface, "upload_file")
            upload = form.files.get("file")
            if upload is None:
                raise _bad("Missing required field 'file'.", "file")
            filename = form.fields.get("filename") if surface is Surface.FOUNDRY else None
            filename = filename or upload.filename
            if not filename:
                raise _bad("The 'file' part needs a filename.", "file")
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
        purpose = _purpose(_required(document, "purpose"), surface, "import_file")
        filename = _required(document, "filename")
        content_url = _required(document, "content_url")
        if not content_url.lower().startswith(("https://", "http://")):
            raise _bad("content_url must be an http(s) URL.", "content_url")
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
            raise _bad("limit must be an integer.", "limit") from None
        if not 1 <= limit <= 10000:
            raise _bad("limit must be between 1 and 10000.", "limit")
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
        path = self.store.content_path(request.path_params["file_id"])
        return FileResponse(path, media_type="application/octet-stream")

    # ---------------------------------------------------------------- uploads
    async def create_upload(self, request: Request, surface: Surface) -> Response:
        document = await read_json(request)
        purpose = _purpose(_required(document, "purpose"), surface, "create_upload")
        filename = _required(document, "filename")
        size = _required(document, "bytes", int)
        if size <= 0:
            raise _bad("Field 'bytes' must be positive.", "bytes")
        mime_type = _required(document, "mime_type")
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
                raise _bad("Missing required field 'data'.", "data")
            part = await run_in_threadpool(self.store.add_part, upload_id, data.path)
        finally:
            for form_file in form.files.values():
                form_file.path.unlink(missing_ok=True)
        return JSONResponse(part)

    async def complete(self, request: Request, surface: Surface) -> Response:
        document = await read_json(request)
        part_ids = _required(document, "part_ids", list)
        if not isinstance(part_ids, list) or not part_ids or not all(isinstance(p, str) for p in part_ids):
            raise _bad("Field 'part_ids' must be a non-empty list of strings.", "part_ids")
        md5 = document.get("md5")
        if md5 is not None and (not isinstance(md5, str) or len(md5) != 32):
            raise _bad("Field 'md5' must be the 32-character hex md5 digest of the file.", "md5")
        upload = await run_in_threadpool(
            self.store.complete_upload, request.path_params["upload_id"], part_ids, md5
        )
        return JSONResponse(upload)

    async def cancel(self, request: Request, surface: Surface) -> Response:
        return JSONResponse(self.store.cancel_upload(request.path_params["upload_id"]))

    # ---------------------------------------------------------------- emulator-only endpoints
    async def identity_token(self, request: Request) -> Response:
        presented = request.headers.get("x-identity-header", "")
        if not hmac.compare_digest(presented.encode(), self.identity.header_secret.encode()):
            return JSONResponse({"statusCode": 401, "message": "Invalid X-IDENTITY-HEADER."}, status_code=401)
        resource = request.query_params.get("resource", "").rstrip("/")
        if resource not in (Surface.DATA_PLANE.token_audience, Surface.FOUNDRY.token_audience):
            return JSONResponse(
                {"statusCode": 400, "message": f"Unknown resource '{resource}'."}, status_code=400
            )
        return JSONResponse(self.identity.issue(resource))

    async def openid_configuration(self, request: Request) -> Response:
        """OIDC discovery for the emulated Entra ID authority ``{emulator url}/{tenant}`` (TLS mode)."""
        base = f"{str(request.base_url).rstrip('/')}/{request.path_params['tenant']}"
        return JSONResponse(
            {
                "issuer": f"{base}/v2.0",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
            }
        )

    async def entra_token(self, request: Request) -> Response:
        """The client-credentials grant with a client secret or a federated (workload identity) assertion."""
        form = await request.form()
        if form.get("grant_type") != "client_credentials":
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        secret, assertion = str(form.get("client_secret") or ""), str(form.get("client_assertion") or "")
        if secret:
            valid = hmac.compare_digest(secret.encode(), self.identity.client_secret.encode())
        else:
            valid = bool(assertion) and hmac.compare_digest(
                assertion.encode(), self.identity.federated_token.encode()
            )
        if not valid or not form.get("client_id"):
            return JSONResponse(
                {
                    "error": "invalid_client",
                    "error_description": "AADSTS7000215: Invalid client secret or assertion.",
                },
                status_code=401,
            )
        resource = str(form.get("scope") or "").removesuffix("/.default")
        if resource not in (Surface.DATA_PLANE.token_audience, Surface.FOUNDRY.token_audience):
            return JSONResponse(
                {"error": "invalid_scope", "error_description": f"Unknown scope {resource!r}."},
                status_code=400,
            )
        issued = self.identity.issue(resource)
        lifetime = int(issued["expires_on"]) - int(time.time())
        return JSONResponse(
            {
                "token_type": "Bearer",
                "expires_in": lifetime,
                "ext_expires_in": lifetime,
                "access_token": issued["access_token"],
            }
        )

    async def control_faults(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.faults.clear()
        elif request.method == "POST":
            document = await request.json()
            try:
                self.faults.inject(**document)
            except (TypeError, ValueError) as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(self.faults.snapshot())

    async def control_link(self, request: Request) -> Response:
        document = await request.json()
        self.faults.set_link(document.get("bandwidth_bytes_per_second"), document.get("latency_seconds", 0.0))
        return JSONResponse(self.faults.snapshot()["link"])

    async def control_statuses(self, request: Request) -> Response:
        document = await request.json()
        try:
            self.store.force_statuses(
                request.path_params["file_id"], document["statuses"], document.get("status_details")
            )
        except (KeyError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except StoreError as error:
            return error_response(Surface.DATA_PLANE, error)
        return JSONResponse({"ok": True})

    async def blob(self, request: Request) -> Response:
        """A tiny blob container for import tests: PUT stores a body, GET serves it (query ignored: SAS)."""
        name = request.path_params["name"]
        if "/" in name or name.startswith("."):
            return JSONResponse({"error": "bad blob name"}, status_code=400)
        path = self.blob_dir / name
        if request.method == "PUT":
            with path.open("wb") as out:
                async for chunk in request.stream():
                    out.write(chunk)
            return JSONResponse({"name": name, "bytes": path.stat().st_size}, status_code=201)
        if not path.exists():
            return JSONResponse({"error": "BlobNotFound"}, status_code=404)
        return FileResponse(path, media_type="application/octet-stream")

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    # ---------------------------------------------------------------- the outermost ASGI layer
    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.starlette(scope, receive, send)
            return
        operation = self.operation_for(scope)
        self.faults.enter(operation)
        try:
            await self._serve(scope, receive, send, operation)
        finally:
            self.faults.leave(operation)

    async def _serve(
        self, scope: dict[str, Any], receive: Callable, send: Callable, operation: str | None
    ) -> None:
        entry = RequestRecord(scope["method"], scope["path"], operation)
        self.faults.record(entry)
        link = self.faults.link
        if link.latency_seconds:
            await asyncio.sleep(link.latency_seconds)
        fault = self.faults.take(operation)
        request_id = str(uuid.uuid4())

        async def send_with_ids(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                entry.status = message["status"]
                headers = list(message.get("headers", []))
                headers += [(b"apim-request-id", request_id.encode()), (b"x-request-id", request_id.encode())]
                message = {**message, "headers": headers}
            await send(message)

        receive = _throttled(receive, link.bandwidth_bytes_per_second)
        if fault is not None:
            if fault.drop:
                entry.fault = "drop"
                await _drop_connection(receive, send)
                return
            if fault.delay_seconds:
                entry.fault = "delay"
                await asyncio.sleep(fault.delay_seconds)
            if fault.status is not None:
                entry.fault = f"status {fault.status}"
                await self._answer_fault(scope, receive, send_with_ids, fault)
                return
        await self.starlette(scope, receive, send_with_ids)

    async def _answer_fault(
        self, scope: dict[str, Any], receive: Callable, send: Callable, fault: Any
    ) -> None:
        while True:  # drain the body so the client reads our answer rather than a reset
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        codes = {
            400: "invalidPayload",
            401: "unauthorized",
            403: "forbidden",
            404: "notFound",
            409: "conflict",
            429: "tooManyRequests",
            503: "serviceUnavailable",
        }
        response = error_response(
            self.surface_of(scope["path"]),
            StoreError(
                fault.status, codes.get(fault.status, "internalFailure"), f"Injected fault {fault.status}."
            ),
        )
        if fault.retry_after is not None:
            response.headers["Retry-After"] = str(fault.retry_after)
        if fault.retry_after_ms is not None:
            response.headers["retry-after-ms"] = str(fault.retry_after_ms)
        await response(scope, receive, send)


def _throttled(receive: Callable, bandwidth: float | None) -> Callable[[], Awaitable[dict[str, Any]]]:
    if not bandwidth:
        return receive
    started = time.monotonic()
    received = 0

    async def throttled_receive() -> dict[str, Any]:
        nonlocal received
        message = await receive()
        received += len(message.get("body", b""))
        ahead = received / bandwidth - (time.monotonic() - started)
        if ahead > 0:
            await asyncio.sleep(ahead)
        return message

    return throttled_receive


async def _drop_connection(receive: Callable, send: Callable) -> None:
    """Read the first chunk of the request, then abort the TCP connection without answering."""
    await receive()
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is not None:  # uvicorn's RequestResponseCycle
        transport.abort()
        return
    raise ConnectionAbortedError("injected connection drop")
