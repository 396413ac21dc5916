"""Error bodies: a :class:`StoreError` in each surface's own shape (ErrorResponse, AzureErrorResponse,
AgentV1Error), and the shorthand for a request the client got wrong.

Messages often echo request input (an id, a URL, a header): every one goes through the project's redaction
rule before it leaves the emulator.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

from airflow_provider_aoai.emulator.store import StoreError
from airflow_provider_aoai.models import Surface
from airflow_provider_aoai.redaction import redact


def error_response(surface: Surface, error: StoreError) -> JSONResponse:
    """``error`` in the surface's own body shape, its message redacted."""
    message = redact(error.message)
    if surface is Surface.DATA_PLANE:
        body: dict[str, Any] = {"code": error.code, "message": message}
        if error.target:
            body["target"] = error.target
    elif surface is Surface.V1:
        body = {"code": error.code, "message": message, "param": error.target, "type": "error"}
    else:
        body = {
            "code": error.code,
            "message": message,
            "param": error.target,
            "type": "invalid_request_error" if error.status < 500 else "server_error",
        }
    return JSONResponse({"error": body}, status_code=error.status)


def bad(message: str, target: str | None = None, status: int = 400) -> StoreError:
    """The client's mistake: ``invalidPayload`` (400 unless told otherwise)."""
    return StoreError(status, "invalidPayload", message, target)
