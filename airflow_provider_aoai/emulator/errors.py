"""Error bodies: a :class:`StoreError` in each surface's own shape (ErrorResponse, AzureErrorResponse,
AgentV1Error), and the shorthand for a request the client got wrong."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

from airflow_provider_aoai.emulator.store import StoreError
from airflow_provider_aoai.models import Surface


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


def bad(message: str, target: str | None = None, status: int = 400) -> StoreError:
    """The client's mistake: ``invalidPayload`` (400 unless told otherwise)."""
    return StoreError(status, "invalidPayload", message, target)
