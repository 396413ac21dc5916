"""The emulator's own ``/_emulator/*`` endpoints: scripted faults and the request log, the simulated link,
forced file statuses, a tiny blob container to import from, and a health check."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from airflow_provider_aoai.emulator.errors import error_response
from airflow_provider_aoai.emulator.faults import FaultPlan
from airflow_provider_aoai.emulator.store import Store, StoreError
from airflow_provider_aoai.models import Surface


class ControlEndpoints:
    """Handlers of ``/_emulator/*`` (the managed-identity endpoint lives in :mod:`.identity`)."""

    def __init__(self, store: Store, faults: FaultPlan, blob_dir: Path) -> None:
        self.store = store
        self.faults = faults
        self.blob_dir = blob_dir

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
