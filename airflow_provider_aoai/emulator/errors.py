"""Errors: :class:`StoreError` (a request broke one of the service's rules), its body in each surface's own
shape (ErrorResponse, AzureErrorResponse, AgentV1Error, OpenAI's error object on a project's OpenAI route),
and the shorthand for a request the client got wrong.

Messages often echo request input (an id, a URL, a header): every one goes through the project's redaction
rule before it leaves the emulator. Importing this module imports no web stack: the command line reads the
quotas before it checks that the emulator's extra is installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_aoai.models import Surface
from airflow_provider_aoai.redaction import redact

if TYPE_CHECKING:
    from starlette.responses import JSONResponse


class DownloadError(Exception):
    """An import's download failed; the message is safe to show (no URL, no text of the source's)."""


class StoreError(Exception):
    """A request broke one of the service's rules.

    :param status: HTTP status to answer with.
    :param code: the data plane ``ErrorCode`` (the other surfaces map it to their own shape).
    :param target: the request field at fault, if any.
    """

    def __init__(self, status: int, code: str, message: str, target: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.target = target


def error_response(surface: Surface, error: StoreError) -> JSONResponse:
    """``error`` in the surface's own body shape, its message redacted."""
    from starlette.responses import JSONResponse  # the errors themselves need no web stack (the quotas)

    message = redact(error.message)
    if surface is Surface.DATA_PLANE:
        body: dict[str, Any] = {"code": error.code, "message": message}
        if error.target:
            body["target"] = error.target
    elif surface is Surface.V1:
        body = {"code": error.code, "message": message, "param": error.target, "type": "error"}
    elif surface is Surface.FOUNDRY_OPENAI:
        # OpenAI's error object, in the recorded key order; a missing object has no code there
        # ("code": null in tests/specs/recordings/aoai_assistants_file_create_delete_404_*.json).
        body = {
            "message": message,
            "type": "invalid_request_error" if error.status < 500 else "server_error",
            "param": error.target,
            "code": None if error.code == "notFound" else error.code,
        }
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
