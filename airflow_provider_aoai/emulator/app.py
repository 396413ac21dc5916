"""The emulator's HTTP application: four surfaces of the Files service over one :class:`Store`.

Routes, status codes, bodies and headers follow the specs (``tests/specs``) and, where they differ, the
recordings of the live service (``tests/specs/recordings``; the table in ``docs/emulator.md`` says which
behaviour follows which):

* data plane ``/openai/...?api-version=2024-10-21`` (azureopenai.json 2024-10-21): ErrorResponse bodies,
  201 + ``Location`` for fine-tune and batch files, 200 for the assistants backend's files and for uploads;
* v1 ``/openai/v1/...`` (azure-v1-v1-generated.json): AzureErrorResponse bodies, 200 for creation, list with
  ``first_id``/``last_id``/``has_more``; api-key, ``Authorization: Bearer <api key>`` or an Entra ID token;
* Foundry project ``/api/projects/{project}/files?api-version=v1`` (azure-ai-agents.json): AgentV1Error
  bodies, 200 FileInfo, Entra ID tokens only (the spec's only security scheme is OAuth2);
* a Foundry project's OpenAI route ``/api/projects/{project}/openai/files?api-version=2025-11-15-preview``
  (recorded; no spec): OpenAI's files API with OpenAI error bodies, paged lists, gzip-compressed JSON
  reads, Entra ID tokens only; no uploads and no import.

This module holds the route table and the outermost ASGI layer, which applies scripted faults, the simulated
WAN link, request ids (``apim-request-id`` on every answer, ``x-request-id`` on the assistants backend's,
see :mod:`.backends`) and the request log; the resource's rate limits (:mod:`.throttle`) are judged here,
called by the router once a request is authenticated. The handlers live in :mod:`.files` (files and uploads),
:mod:`.control` (``/_emulator/*``) and :mod:`.identity` (token issuers); request bodies are read by
:mod:`.bodies`, and :mod:`.routing` checks api-version and auth before any handler runs.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_aoai.emulator import backends
from airflow_provider_aoai.emulator.bodies import drain
from airflow_provider_aoai.emulator.control import ControlEndpoints
from airflow_provider_aoai.emulator.errors import StoreError, error_response
from airflow_provider_aoai.emulator.faults import Fault, FaultPlan, RequestRecord
from airflow_provider_aoai.emulator.files import FilesEndpoints
from airflow_provider_aoai.emulator.identity import Identity, IdentityEndpoints
from airflow_provider_aoai.emulator.routing import Access, Authenticator, Resolved, Route, Router
from airflow_provider_aoai.emulator.throttle import THROTTLED_MARK, Throttler, throttled_response
from airflow_provider_aoai.models import Surface
from airflow_provider_aoai.redaction import redact_encoded, register_secret

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from airflow_provider_aoai.emulator.store import Store

__all__ = ["EmulatorApp", "Identity"]

# The data plane ErrorCode an injected status answers with.
FAULT_CODES = {
    400: "invalidPayload",
    401: "unauthorized",
    403: "forbidden",
    404: "notFound",
    409: "conflict",
    429: "tooManyRequests",
    503: "serviceUnavailable",
}


class EmulatorApp:
    """The ASGI app: holds the store, auth settings, identity service, fault plan and rate limits.

    :param internal_token: the value of the header the emulator's own import downloader sends to its blob
        container (a fresh random one if not given).
    :param throttler: the resource's rate limits (``None``: the service's defaults).
    """

    def __init__(
        self,
        store: Store,
        *,
        api_key: str | None,
        identity: Identity,
        faults: FaultPlan,
        blob_dir: Path,
        internal_token: str | None = None,
        throttler: Throttler | None = None,
    ) -> None:
        self.store = store
        self.api_key = api_key
        self.identity = identity
        self.faults = faults
        self.blob_dir = blob_dir
        self.internal_token = internal_token or secrets.token_urlsafe(32)
        self.throttler = throttler if throttler is not None else Throttler()
        # Our own secrets never appear in a message we build, whatever the request echoes.
        for secret in (
            api_key,
            identity.header_secret,
            identity.client_secret,
            identity.federated_token,
            self.internal_token,
        ):
            register_secret(secret)
        self.files = FilesEndpoints(store)
        self.control = ControlEndpoints(store, faults, blob_dir, self.throttler)
        self.identity_endpoints = IdentityEndpoints(identity)
        self.router = self._routes(
            Router(Authenticator(api_key, identity, self.internal_token), admit=self._admit)
        )

    # ---------------------------------------------------------------- routing table
    def _routes(self, router: Router) -> Router:
        files = self.files
        for surface in (Surface.V1, Surface.DATA_PLANE, Surface.FOUNDRY, Surface.FOUNDRY_OPENAI):
            router.operation(surface, "POST", "/files", "files.create", files.create_file)
            router.operation(surface, "GET", "/files", "files.list", files.list_files)
            if surface is Surface.DATA_PLANE:
                router.operation(surface, "POST", "/files/import", "files.import", files.import_file)
            router.operation(surface, "GET", "/files/{file_id}", "files.get", files.get_file)
            router.operation(surface, "DELETE", "/files/{file_id}", "files.delete", files.delete_file)
            router.operation(surface, "GET", "/files/{file_id}/content", "files.content", files.file_content)
            if surface.supports_uploads:
                router.operation(surface, "POST", "/uploads", "uploads.create", files.create_upload)
                router.operation(
                    surface, "POST", "/uploads/{upload_id}/parts", "uploads.parts", files.add_part
                )
                router.operation(
                    surface, "POST", "/uploads/{upload_id}/complete", "uploads.complete", files.complete
                )
                router.operation(
                    surface, "POST", "/uploads/{upload_id}/cancel", "uploads.cancel", files.cancel
                )

        identity, control = self.identity_endpoints, self.control
        # The token issuers check their own credentials (X-IDENTITY-HEADER, client secret or assertion).
        router.endpoint("/_emulator/identity/token", ["GET"], identity.identity_token, Access.OPEN)
        router.endpoint(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            ["GET"],
            identity.openid_configuration,
            Access.OPEN,
        )
        router.endpoint("/{tenant}/oauth2/v2.0/token", ["POST"], identity.entra_token, Access.OPEN)
        router.endpoint("/_emulator/faults", ["GET", "POST", "DELETE"], control.control_faults, Access.KEY)
        router.endpoint("/_emulator/link", ["POST"], control.control_link, Access.KEY)
        router.endpoint("/_emulator/throttle", ["GET", "POST"], control.control_throttle, Access.KEY)
        router.endpoint("/_emulator/files/{file_id}/statuses", ["POST"], control.control_statuses, Access.KEY)
        router.endpoint("/_emulator/uploads", ["GET"], control.list_uploads, Access.KEY)
        router.endpoint("/_emulator/blobs/{name}", ["GET"], control.get_blob, Access.KEY_OR_INTERNAL)
        router.endpoint("/_emulator/blobs/{name}", ["PUT"], control.put_blob, Access.KEY)
        router.endpoint("/_emulator/health", ["GET"], control.health, Access.OPEN)
        return router

    async def _admit(self, request: Request, route: Route) -> Response | None:
        """The rate limits: ``None`` lets the request through; a throttled one is answered 429 and has no
        effect (its body is read and dropped, so that the client reads the answer rather than a reset)."""
        operation, surface = route.operation, route.surface
        if operation is None or surface is None:
            return None
        wait = self.throttler.admit(operation)
        if wait is None:
            return None
        await drain(request)
        return throttled_response(surface, operation, request.query_params.get("api-version"), wait)

    # ---------------------------------------------------------------- the outermost ASGI layer
    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            return  # lifespan is off; nothing else is served
        resolved = self.router.resolve(scope)
        operation = resolved.operation
        self.faults.enter(operation)
        try:
            await self._serve(scope, receive, send, resolved)
        finally:
            self.faults.leave(operation)

    async def _serve(
        self, scope: dict[str, Any], receive: Callable, send: Callable, resolved: Resolved
    ) -> None:
        entry = RequestRecord(
            resolved.method,
            resolved.logged_path(),
            resolved.operation,
            {name: redact_encoded(value) for name, value in resolved.params.items()},
        )
        self.faults.record(entry)
        link = self.faults.link
        if link.latency_seconds:
            await asyncio.sleep(link.latency_seconds)
        fault = self.faults.take(resolved.operation, resolved.raw_path)

        async def send_with_ids(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                entry.status = message["status"]
                mark, throttled = backends.ASSISTANTS_MARK.encode(), THROTTLED_MARK.encode()
                original = list(message.get("headers", []))
                headers = [(name, value) for name, value in original if name not in (mark, throttled)]
                marked = any(name == mark for name, _ in original)
                entry.throttled = any(name == throttled for name, _ in original)
                headers.append((b"apim-request-id", str(uuid.uuid4()).encode()))
                if backends.answers_with_x_request_id(resolved.operation, resolved.params, marked):
                    headers.append((b"x-request-id", _x_request_id(resolved.surface).encode()))
                message = {**message, "headers": headers}
            await send(message)

        receive = _throttled(receive, link.bandwidth_bytes_per_second)
        if fault is None:
            await self.router.handle(scope, receive, send_with_ids, resolved)
            return
        if fault.delay_seconds:
            entry.fault = "delay"
            await asyncio.sleep(fault.delay_seconds)
        if fault.after:
            # The service acts on the request; only its answer is lost.
            served: list[int] = []

            async def swallow(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    served.append(message["status"])

            await self.router.handle(scope, receive, swallow, resolved)
            outcome = served[0] if served else "nothing"
            if fault.drop:
                entry.fault = f"drop after {outcome}"
                _abort(send)
            else:
                entry.fault = f"status {fault.status} after {outcome}"
                await self._answer_fault(scope, receive, send_with_ids, fault, resolved, drain=False)
            return
        if fault.drop:
            entry.fault = "drop"
            await receive()  # read the first chunk of the request, then hang up
            _abort(send)
            return
        if fault.status is not None:
            entry.fault = f"status {fault.status}"
            await self._answer_fault(scope, receive, send_with_ids, fault, resolved, drain=True)
            return
        await self.router.handle(scope, receive, send_with_ids, resolved)

    @staticmethod
    async def _answer_fault(
        scope: dict[str, Any],
        receive: Callable,
        send: Callable,
        fault: Fault,
        resolved: Resolved,
        *,
        drain: bool,
    ) -> None:
        status = fault.status or 500  # Fault's validation guarantees a status on this path
        while drain:  # read the body so the client reads our answer rather than a reset
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        response = error_response(
            resolved.surface,
            StoreError(status, FAULT_CODES.get(status, "internalFailure"), f"Injected fault {status}."),
        )
        if fault.retry_after is not None:
            response.headers["Retry-After"] = str(fault.retry_after)
        if fault.retry_after_ms is not None:
            response.headers["retry-after-ms"] = str(fault.retry_after_ms)
        await response(scope, receive, send)


def _x_request_id(surface: Surface) -> str:
    """A UUID, as the data plane sends it; 32 hex digits on a project's OpenAI route (recorded)."""
    request_id = uuid.uuid4()
    return request_id.hex if surface is Surface.FOUNDRY_OPENAI else str(request_id)


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


def _abort(send: Callable) -> None:
    """Abort the TCP connection without answering (uvicorn's ``send`` is bound to the connection cycle)."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None:
        raise ConnectionAbortedError("injected connection drop")
    transport.abort()
