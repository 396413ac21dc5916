"""What the client decides, without doing any I/O: retries, backoff, ``Retry-After``, error mapping, answers.

Every request of every path (hook, operators, sensor, trigger) goes through these functions, as in
openai-python's base client: :mod:`~airflow_provider_aoai.http.client` runs the loop, this module decides.

Retry policy
    * 408, 429, 500, 502, 503, 504 and connection failures are retried, at most ``max_retries`` times and
      ``max_retry_wait`` seconds of waiting in all, with exponential backoff and full jitter, never sooner
      than ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date) say; any other 4xx is final, and
      so is a TLS failure. The error raised when they run out says how many attempts and how long.
    * A request that creates something (a file, an upload) is retried only where the service cannot have
      acted on it: 408/429 answers and connections that never opened. A 5xx or a connection dropped
      mid-request may have created the file, so it is raised, never repeated: a retry must not leave a
      duplicate behind. (Completing an upload is not such a create: an upload completes at most once.)

Answers
    A successful answer must be the JSON object the operation promises
    (:func:`airflow_provider_aoai.models.check_object`); an error answer becomes the exception of its status
    (:func:`airflow_provider_aoai.exceptions.api_error_class`) with the service's code, message, target and
    request id, read from the body and the headers, never parsed out of message text.
"""

from __future__ import annotations

import email.utils
import enum
import json
import math
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider_aoai.exceptions import AzureOpenAIAPIError, AzureOpenAIResponseError, api_error_class
from airflow_provider_aoai.models import ObjectKind, check_object

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# Answers that prove the service did not act on the request.
NOT_ACTED_STATUSES = frozenset({408, 429})
REQUEST_ID_HEADERS = ("apim-request-id", "x-request-id", "x-ms-request-id")
MAX_BACKOFF_SECONDS = 60.0
# The most one request waits between its attempts, in all (the ``max_retry_wait`` extra): five retries at
# the longest backoff.
MAX_RETRY_WAIT_SECONDS = 300.0
# How much of an error answer is read: its code, message and target come first; the rest is not worth the
# memory (a misbehaving service may send megabytes, or never stop).
ERROR_BODY_LIMIT = 64 * 1024
# How much of a successful answer is read (all but downloads are read whole): the largest the service sends,
# a list of every file of a resource, is a few MB; a service that sends more, or never stops, is refused.
ANSWER_LIMIT = 64 * 1024 * 1024


class Retry(enum.Enum):
    """How far a request may be repeated."""

    SAFE = "safe"  # reads, deletes, cancels, parts, complete: repeating is harmless
    CREATE = "create"  # creates an object: repeat only what the service cannot have acted on


@dataclass(frozen=True)
class Failure:
    """Why a request got no answer, as the transport judged it.

    :param reason: in words, for messages ("the connection was refused", "no answer within 120s", ...).
    :param never_sent: the connection never opened, so the service cannot have seen the request.
    :param tls: TLS failed (a certificate that fails verification fails again).
    """

    reason: str
    never_sent: bool = False
    tls: bool = False


def body_limit(status: int) -> int:
    """How much of an answer with ``status`` is read."""
    return ANSWER_LIMIT if status < 300 else ERROR_BODY_LIMIT


def may_retry_status(status: int, retry: Retry) -> bool:
    return status in (RETRYABLE_STATUSES if retry is Retry.SAFE else NOT_ACTED_STATUSES)


def may_retry_failure(failure: Failure, retry: Retry) -> bool:
    return not failure.tls and (retry is Retry.SAFE or failure.never_sent)


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or HTTP date), if given.

    A value that is not a finite number of seconds (``nan``, ``inf``) is ignored, as if absent.
    """
    value = headers.get("retry-after-ms")
    if value:
        try:
            milliseconds = float(value)
            if math.isfinite(milliseconds):
                return max(milliseconds / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def backoff_seconds(
    attempt: int, retry_after: float | None, *, first: float, ceiling: float = MAX_BACKOFF_SECONDS
) -> float:
    """How long to wait before retry ``attempt + 1``: ``first`` doubled per attempt, capped at ``ceiling``,
    with full jitter in its upper half; never less than the service's ``Retry-After``, however long (the
    caller's budget, ``max_retry_wait``, decides whether to wait that long or give up).

    The jitter matters under throttling: a fleet told "Retry-After: 1" all at once would otherwise come back
    all at once, and be throttled again; the doubling spreads the tasks that keep losing.
    """
    cap = min(ceiling, first * (2**attempt))
    jittered = random.uniform(cap / 2, cap)
    if retry_after is None:
        return jittered
    return max(retry_after, jittered)


def request_id_of(headers: Mapping[str, str]) -> str | None:
    """The first request id the service sent (``apim-request-id``, ``x-request-id``, ``x-ms-request-id``)."""
    return next((headers[name] for name in REQUEST_ID_HEADERS if name in headers), None)


# The first fields of an error body cut short, where it no longer parses as JSON.
_CUT_FIELDS = {
    name: re.compile(rf'"{name}"\s*:\s*"((?:[^"\\]|\\.)*)') for name in ("code", "message", "target", "param")
}


def api_error(
    status: int,
    reason: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    truncated: bool = False,
    attempts: int = 1,
    waited: float = 0.0,
    gave_up: str | None = None,
) -> AzureOpenAIAPIError:
    """The exception for an error answer of any surface (ErrorResponse, AzureErrorResponse, AgentV1Error,
    OpenAI's error object), with the status, the service's code, message, target and request id.

    :param truncated: the body was cut at :data:`ERROR_BODY_LIMIT`; its first fields are still read.
    :param attempts: how many times the request was sent; ``waited``: seconds spent between them;
        ``gave_up``: why a retryable answer was not retried.
    """
    code = message = target = None
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nested too deeply
        document = None
    if isinstance(document, dict):
        nested = document.get("error")
        error: dict[str, Any] = nested if isinstance(nested, dict) else document
        code, message = error.get("code"), error.get("message")
        target = error.get("target") or error.get("param")
    elif truncated:
        text = body.decode("utf-8", "replace")
        found = {name: m.group(1) for name, pattern in _CUT_FIELDS.items() if (m := pattern.search(text))}
        code, message = found.get("code"), found.get("message")
        target = found.get("target") or found.get("param")
    return api_error_class(status)(
        status,
        str(code) if code is not None else None,
        str(message or reason or "no error message in the response"),
        target=str(target) if target is not None else None,
        request_id=request_id_of(headers),
        attempts=attempts,
        waited=waited,
        gave_up=gave_up,
    )


def answer_object(
    what: str,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    expect: ObjectKind,
    expect_id: str | None = None,
    expect_parent: str | None = None,
    object_hook: Callable[[dict[str, Any]], Any] | None = None,
) -> dict[str, Any]:
    """The JSON object of a successful answer, checked to be the ``expect`` kind (and id).

    :param what: the request, for messages (``GET files/file-1``).
    :param object_hook: :func:`json.loads`'s, called with each object as it is parsed.
    :raises AzureOpenAIResponseError: the answer is not JSON, not an object, or not what was asked for.
    """
    problem: str | None
    try:
        payload = json.loads(body, object_hook=object_hook)
    except RecursionError:
        payload = None
        problem = "the answer is JSON nested too deeply to be read"
    except ValueError:
        payload = None
        problem = f"the answer is not JSON (Content-Type {headers.get('content-type', 'none')!r})"
    else:
        problem = check_object(payload, expect, expect_id, expect_parent)
    if problem is not None:
        raise AzureOpenAIResponseError(
            status, "unexpectedResponse", f"{what}: {problem}", request_id=request_id_of(headers)
        )
    return payload


def too_large(what: str, status: int, headers: Mapping[str, str]) -> AzureOpenAIResponseError:
    """A successful answer longer than :data:`ANSWER_LIMIT`: refused, not read further."""
    return AzureOpenAIResponseError(
        status,
        "answerTooLarge",
        f"{what}: the answer is larger than {ANSWER_LIMIT // 2**20} MiB, more than the service ever sends; "
        "it was not read further",
        request_id=request_id_of(headers),
    )


def redirected(what: str, status: int, headers: Mapping[str, str]) -> AzureOpenAIResponseError:
    """A 3xx: never followed (it would carry the credentials elsewhere)."""
    return AzureOpenAIResponseError(
        status,
        "unexpectedRedirect",
        f"{what} answered a redirect; redirects are not followed",
        request_id=request_id_of(headers),
    )
