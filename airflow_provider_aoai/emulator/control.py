"""The emulator's own ``/_emulator/*`` endpoints: scripted faults and the request log, the simulated link,
the rate limits and their counts, forced file statuses, the uploads it holds, a tiny blob container to import
from, and a health check.

They are not part of the service. When the emulator has an api key they need it (the router checks it, see
:class:`~airflow_provider_aoai.emulator.routing.Access`), except the health check. Their errors use the data
plane's ``ErrorResponse`` shape.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.responses import FileResponse, JSONResponse, Response

from airflow_provider_aoai.emulator.bodies import drain, read_json
from airflow_provider_aoai.emulator.errors import StoreError, bad
from airflow_provider_aoai.models import CONTROL_CHARACTERS

if TYPE_CHECKING:
    from starlette.requests import Request

    from airflow_provider_aoai.emulator.faults import FaultPlan
    from airflow_provider_aoai.emulator.store import Store
    from airflow_provider_aoai.emulator.throttle import Throttler

MAX_BLOB_NAME_BYTES = 255  # one file name on the disk under the container


def blob_name_problem(name: object) -> str | None:
    """Why ``name`` cannot name a blob in the emulator's container, or ``None`` if it can."""
    if not isinstance(name, str) or not name:
        return "a blob name must be a non-empty string"
    if "/" in name or "\\" in name:
        return "a blob name must not contain '/' or '\\'"
    if name.startswith("."):
        return "a blob name must not start with '.'"
    if CONTROL_CHARACTERS.search(name):
        return "a blob name must not contain control characters"
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        return "a blob name must be valid UTF-8"
    if len(encoded) > MAX_BLOB_NAME_BYTES:
        return f"a blob name must not exceed {MAX_BLOB_NAME_BYTES} bytes"
    return None


class ControlEndpoints:
    """Handlers of ``/_emulator/*`` (the managed-identity endpoint lives in :mod:`.identity`)."""

    def __init__(self, store: Store, faults: FaultPlan, blob_dir: Path, throttler: Throttler) -> None:
        self.store = store
        self.faults = faults
        self.blob_dir = blob_dir
        self.throttler = throttler

    async def control_faults(self, request: Request) -> Response:
        """GET: the plan and the request log; POST: script a fault (JSON of :class:`Fault`); DELETE: reset
        (faults, link, request log, and the rate limits: back to the configured rates, counts cleared)."""
        if request.method == "DELETE":
            self.faults.clear()
            self.throttler.reset()
        elif request.method == "POST":
            document = await read_json(request, any_content_type=True)
            try:
                self.faults.inject(**document)
            except (TypeError, ValueError) as exc:
                raise bad(f"Not a fault: {exc}.") from None
        return JSONResponse(self.faults.snapshot())

    async def control_link(self, request: Request) -> Response:
        document = await read_json(request, any_content_type=True)
        unknown = set(document) - {"bandwidth_bytes_per_second", "latency_seconds"}
        if unknown:
            raise bad(f"Unknown link settings: {', '.join(sorted(unknown))}.")
        try:
            self.faults.set_link(
                document.get("bandwidth_bytes_per_second"), document.get("latency_seconds", 0.0)
            )
        except ValueError as exc:
            raise bad(str(exc)) from None
        return JSONResponse(self.faults.snapshot()["link"])

    async def control_throttle(self, request: Request) -> Response:
        """GET: per class, the rate and the ``allowed``/``throttled`` counts since the last reset; POST:
        ``{"creates": rate, "parts": rate, "reads": rate}`` (any of them; 0: no limit) changes rates."""
        if request.method == "POST":
            document = await read_json(request, any_content_type=True)
            try:
                self.throttler.set_rates(**document)
            except ValueError as exc:
                raise bad(f"{exc}.") from None
        return JSONResponse(self.throttler.snapshot())

    async def control_statuses(self, request: Request) -> Response:
        document = await read_json(request, any_content_type=True)
        statuses, details = document.get("statuses"), document.get("status_details")
        if not isinstance(statuses, list) or not statuses or not all(isinstance(s, str) for s in statuses):
            raise bad("'statuses' must be a non-empty list of file statuses.", "statuses")
        if details is not None and not isinstance(details, str):
            raise bad("'status_details' must be a string.", "status_details")
        try:
            self.store.force_statuses(request.path_params["file_id"], statuses, details)
        except ValueError:
            raise bad("'statuses' lists a status that files do not have.", "statuses") from None
        return JSONResponse({"ok": True})

    async def list_uploads(self, request: Request) -> Response:
        """Every upload the store holds, with the parts it received and the file it completed into."""
        return JSONResponse({"object": "list", "data": self.store.list_uploads()})

    # ---------------------------------------------------------------- blob container
    def _blob_path(self, request: Request) -> Path:
        name = request.path_params["name"]
        problem = blob_name_problem(name)
        if problem is not None:
            raise bad(f"{problem}.", "name")
        return self.blob_dir / name

    async def get_blob(self, request: Request) -> Response:
        """Serve a blob (the query, a SAS, is not verified: access is the api key or the emulator itself)."""
        path = self._blob_path(request)
        if not path.is_file():
            raise StoreError(404, "BlobNotFound", "The specified blob does not exist.", "name")
        return FileResponse(path, media_type="application/octet-stream")

    async def put_blob(self, request: Request) -> Response:
        """Store the body as a blob, up to the emulator's file size limit (an oversized body is drained, then
        answered 413, and nothing is stored)."""
        path = self._blob_path(request)
        limit = self.store.limits.max_file_bytes
        too_large = StoreError(413, "invalidPayload", f"The blob exceeds the limit of {limit} bytes.", "body")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await drain(request)
            raise too_large
        incoming = self.blob_dir / f".incoming-{uuid.uuid4().hex}"
        size = 0
        try:
            with incoming.open("wb") as out:
                async for chunk in request.stream():  # read to the end even when over, then answer
                    size += len(chunk)
                    if size <= limit:
                        out.write(chunk)
            if size > limit:
                raise too_large
            os.replace(incoming, path)
        finally:
            incoming.unlink(missing_ok=True)
        return JSONResponse({"name": path.name, "bytes": size}, status_code=201)

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})
