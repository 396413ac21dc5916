"""Every error this provider raises, in one hierarchy rooted in :class:`AirflowException`.

Service errors carry the HTTP status, the service's error ``code``, its ``message``, the ``target``/``param``
it names and the request id, read from the body and headers, never parsed out of message text. No
exception here ever holds a secret: messages are built from the service's error body and our own text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException

from airflow_provider_aoai.redaction import redact


class AzureOpenAIError(AirflowException):
    """Root of every error raised by this provider.

    Its message goes through :func:`~airflow_provider_aoai.redaction.redact`: no known secret, URL userinfo or
    query value survives, and it is at most about 1 KB long, whatever the caller (or the service) put in it.
    """

    def __init__(self, message: object = "", *args: object) -> None:
        super().__init__(redact(message), *args)


class AzureOpenAIConfigError(AzureOpenAIError):
    """The Airflow connection is unusable: unknown auth type, missing field, bad endpoint."""


class AzureOpenAICredentialError(AzureOpenAIError):
    """azure-identity could not obtain an Entra ID token (wrong secret, no managed identity, ...)."""


class AzureOpenAIInvalidArgumentError(AzureOpenAIError, AirflowFailException, ValueError):
    """An argument is invalid; raised before any request is sent. The task fails without retrying.

    :param argument: name of the offending argument, as the caller wrote it.
    """

    def __init__(self, argument: str, message: str) -> None:
        self.argument = argument
        super().__init__(f"{argument}: {message}")


class AzureOpenAIDatasetError(AzureOpenAIInvalidArgumentError):
    """A dataset breaks the service's rules for its purpose; found before any request, so nothing was created.

    :param argument: the argument that named the dataset (``source``).
    :param problems: every problem found, each with ``code``, ``line`` (1-based, or ``None`` for the whole
        file) and ``message`` (see :class:`airflow_provider_aoai.datasets.DatasetProblem`); the exception's
        message shows the first :attr:`SHOWN` of them.
    """

    SHOWN = 5

    def __init__(self, argument: str, problems: Sequence[Any]) -> None:
        self.problems = list(problems)
        shown = "; ".join(f"[{p.code}] {p.message}" for p in self.problems[: self.SHOWN])
        more = len(self.problems) - self.SHOWN
        super().__init__(
            argument,
            f"the service would refuse this dataset: {shown}" + (f"; and {more} more" if more > 0 else ""),
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.argument, self.problems))


class AzureOpenAIUnsupportedOperationError(AzureOpenAIError, AirflowFailException):
    """The connection's surface does not offer the operation (e.g. uploads on a Foundry project).

    Raised before any request; the task fails without retrying.
    """


class AzureOpenAIConnectionError(AzureOpenAIError):
    """The service could not be reached (DNS, TCP, TLS, timeout) and retries, if any, ran out."""


class AzureOpenAIAPIError(AzureOpenAIError):
    """The service answered with an error status.

    :param status: HTTP status code.
    :param code: the service's error code (``ErrorCode`` on /openai, free text on Foundry), if any.
    :param message: the service's message.
    :param target: the field the service blames (``target`` or ``param``), if any.
    :param request_id: ``apim-request-id`` / ``x-request-id`` of the failed request, for support tickets.
    :param attempts: how many times the request was sent before the client gave up (1: not retried).
    :param waited: seconds the client waited between those attempts.
    :param gave_up: why the client stopped retrying an answer it could have retried (its retry budget).
    """

    def __init__(
        self,
        status: int,
        code: str | None,
        message: str,
        *,
        target: str | None = None,
        request_id: str | None = None,
        attempts: int = 1,
        waited: float = 0.0,
        gave_up: str | None = None,
    ) -> None:
        self.status = status
        self.code = redact(code, limit=128) if code is not None else None
        self.message = redact(message)
        self.target = redact(target, limit=128) if target is not None else None
        self.request_id = redact(request_id, limit=128) if request_id is not None else None
        self.attempts = attempts
        self.waited = waited
        self.gave_up = gave_up
        super().__init__(self._describe())

    def _describe(self) -> str:
        text = f"HTTP {self.status}"
        if self.code:
            text += f" {self.code}"
        text += f": {self.message}"
        if self.target:
            text += f" (target: {self.target})"
        if self.request_id:
            text += f" [request id {self.request_id}]"
        if self.attempts > 1 or self.gave_up:
            tries = f"{self.attempts} attempt{'s' if self.attempts > 1 else ''}"
            text += f" (gave up after {tries}, {self.waited:.1f}s of waiting between them"
            text += f": {self.gave_up})" if self.gave_up else ")"
        return text

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_api_error,
            (
                type(self),
                self.status,
                self.code,
                self.message,
                self.target,
                self.request_id,
                self.attempts,
                self.waited,
                self.gave_up,
            ),
        )


def _rebuild_api_error(  # pragma: no cover - pickling
    cls: type[AzureOpenAIAPIError],
    status: int,
    code: str | None,
    message: str,
    target: str | None,
    request_id: str | None,
    attempts: int = 1,
    waited: float = 0.0,
    gave_up: str | None = None,
) -> AzureOpenAIAPIError:
    return cls(
        status,
        code,
        message,
        target=target,
        request_id=request_id,
        attempts=attempts,
        waited=waited,
        gave_up=gave_up,
    )


class AzureOpenAIBadRequestError(AzureOpenAIAPIError):
    """400/413/415/422: the request is invalid; retrying it cannot succeed."""


class AzureOpenAIAuthenticationError(AzureOpenAIAPIError):
    """401: missing or wrong api key, or a token for the wrong audience."""


class AzureOpenAIPermissionDeniedError(AzureOpenAIAPIError):
    """403: the identity lacks a role on the resource (e.g. "Cognitive Services OpenAI Contributor")."""


class AzureOpenAINotFoundError(AzureOpenAIAPIError):
    """404: unknown file/upload id, wrong endpoint, or an api-version the service does not offer."""


class AzureOpenAIConflictError(AzureOpenAIAPIError):
    """409: the resource is in a state that forbids the operation (e.g. a part after complete)."""


class AzureOpenAIResponseError(AzureOpenAIAPIError):
    """The service answered success, but not with the object the operation promises.

    For example an HTML page, a JSON array, a file list where a File was expected, or a File with another
    id than the one asked for. Never treated as a success; ``code`` is ``unexpectedResponse`` (or
    ``unexpectedRedirect`` for a 3xx, which is never followed: it would carry the credentials elsewhere, or
    ``answerTooLarge`` for an answer of more than 64 MiB, which is not read further).
    """


class AzureOpenAIRateLimitError(AzureOpenAIAPIError):
    """429 after the retries ran out: ``max_retries`` retries, or ``max_retry_wait`` seconds of waiting.

    Its message says how many attempts were made and how long the client waited. A fleet of tasks that
    meets it should send fewer requests at once (an Airflow pool per resource, see docs/scale.md) rather
    than retry longer.
    """


class AzureOpenAIServiceError(AzureOpenAIAPIError):
    """5xx (or 408) after the retries ran out, or where retrying could have created a duplicate."""


_STATUS_TO_ERROR: dict[int, type[AzureOpenAIAPIError]] = {
    400: AzureOpenAIBadRequestError,
    401: AzureOpenAIAuthenticationError,
    403: AzureOpenAIPermissionDeniedError,
    404: AzureOpenAINotFoundError,
    408: AzureOpenAIServiceError,
    409: AzureOpenAIConflictError,
    413: AzureOpenAIBadRequestError,
    415: AzureOpenAIBadRequestError,
    422: AzureOpenAIBadRequestError,
    429: AzureOpenAIRateLimitError,
}


def api_error_class(status: int) -> type[AzureOpenAIAPIError]:
    """The exception class for an HTTP error status."""
    if status in _STATUS_TO_ERROR:
        return _STATUS_TO_ERROR[status]
    if status >= 500:
        return AzureOpenAIServiceError
    return AzureOpenAIAPIError


class AzureOpenAIFileProcessingError(AzureOpenAIError, AirflowFailException):
    """A file reached a failed terminal status (``error`` or ``deleted``); retrying the task cannot help.

    :param file: the File dict as last seen; ``status_details`` says why the service rejected it.
    """

    def __init__(self, file: Mapping[str, Any]) -> None:
        self.file = dict(file)
        self.file_id = file.get("id")
        self.status = file.get("status")
        self.status_details = file.get("status_details")
        text = f"File {self.file_id} ended in status {self.status!r}"
        if self.status_details:
            text += f": {self.status_details}"
        super().__init__(text)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.file,))


class AzureOpenAIWaitTimeoutError(AzureOpenAIError):
    """A file did not reach a terminal status within the allowed time."""


class AzureOpenAIDestinationError(AzureOpenAIError):
    """A download's destination could not be written (disk full, directory removed, permissions changed).

    What was written is removed; the destination itself is untouched.
    """


class AzureOpenAIStoppedError(AzureOpenAIError):
    """The work was stopped on purpose (the task is being killed: ``on_kill``, SIGTERM, mark failed)."""


class AzureOpenAIUploadError(AzureOpenAIError):
    """A multipart upload gave up.

    :param upload_id: the upload; ``cancelled`` says whether it was cancelled on the service or kept so that
        the next try can resume it.
    """

    def __init__(self, message: str, *, upload_id: str | None = None, cancelled: bool = True) -> None:
        self.upload_id = upload_id
        self.cancelled = cancelled
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_upload_error, (type(self), str(self), self.upload_id, self.cancelled))


def _rebuild_upload_error(  # pragma: no cover - pickling
    cls: type[AzureOpenAIUploadError], message: str, upload_id: str | None, cancelled: bool
) -> AzureOpenAIUploadError:
    return cls(message, upload_id=upload_id, cancelled=cancelled)


class AzureOpenAISourceChangedError(AzureOpenAIUploadError):
    """The source changed (size, modification time, etag or version) while it was being uploaded.

    The upload is cancelled (or, for a single-request upload, the body is never completed), so the service
    never holds a truncated or mixed file. A later try uploads the source as it is then.
    """
