"""Argument checks shared by the hook, the operators, the sensor and the trigger.

Every check runs before the first request and raises :class:`AzureOpenAIInvalidArgumentError` naming the
argument, so a bad value costs nothing on the service and never retries. Values that end up in a URL path
(ids) are additionally percent-encoded by the client; these checks refuse what no id of the service is (a
character outside letters, digits, ``-``, ``_``, ``.``, ``:``; ``.``, ``..``) so that an id addresses the
object it names, even through a gateway that decodes the path before it routes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_aoai.exceptions import AzureOpenAIInvalidArgumentError
from airflow_provider_aoai.models import (
    CONTROL_CHARACTERS,
    MAX_ID_CHARS,
    NOT_AN_ID_CHARACTER,
    expiry_range,
    has_space_or_control,
)
from airflow_provider_aoai.redaction import redact_url
from airflow_provider_aoai.urls import is_valid_host

MAX_FILENAME_CHARS = 512
MAX_URL_CHARS = 8192
# The trigger never polls faster than this, whatever it is given: a tight loop would hammer the service.
MIN_POLL_SECONDS = 0.05
MAX_SECONDS = 30 * 24 * 3600.0


def _has_control(text: str) -> bool:
    return CONTROL_CHARACTERS.search(text) is not None


def _shown(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}..."


def check_id(value: Any, argument: str) -> str:
    """An object id (file, upload, part) as the service mints them (:func:`models.is_usable_id`): letters,
    digits, ``-``, ``_``, ``.`` and ``:``; not ``.`` or ``..``; at most 256 characters."""
    if not isinstance(value, str):
        raise AzureOpenAIInvalidArgumentError(argument, f"must be a string id, got {type(value).__name__}")
    if not value.strip():
        raise AzureOpenAIInvalidArgumentError(argument, "must not be empty or whitespace")
    if value in (".", ".."):
        raise AzureOpenAIInvalidArgumentError(argument, f"{value!r} is not an id")
    if len(value) > MAX_ID_CHARS:
        raise AzureOpenAIInvalidArgumentError(argument, f"is longer than {MAX_ID_CHARS} characters")
    if (found := NOT_AN_ID_CHARACTER.search(value)) is not None:
        raise AzureOpenAIInvalidArgumentError(
            argument,
            f"{_shown(value)} holds {found.group()!r}, which no id of the service has (an id is letters, "
            "digits, '-', '_', '.' and ':')",
        )
    return value


def check_ids(values: Any, argument: str) -> list[str]:
    """A non-empty list of ids (e.g. ``part_ids``), each checked by :func:`check_id`, without repeats."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise AzureOpenAIInvalidArgumentError(argument, "must be a non-empty list of ids")
    checked = [check_id(value, f"{argument}[{index}]") for index, value in enumerate(values)]
    if len(set(checked)) != len(checked):
        raise AzureOpenAIInvalidArgumentError(argument, "lists an id more than once")
    return checked


def check_text(value: Any, argument: str, *, max_chars: int = 1024) -> str:
    """A non-empty single-line string (a MIME type, a filename prefix)."""
    if not isinstance(value, str) or not value.strip():
        raise AzureOpenAIInvalidArgumentError(argument, "must be a non-empty string")
    if _has_control(value):
        raise AzureOpenAIInvalidArgumentError(
            argument, "must not contain control characters (CR, LF, NUL, ...)"
        )
    if len(value) > max_chars:
        raise AzureOpenAIInvalidArgumentError(argument, f"is longer than {max_chars} characters")
    return value


def check_filename(value: Any, argument: str = "filename") -> str:
    """A file name as the service stores it: non-empty, no control characters, no path separators."""
    check_text(value, argument, max_chars=MAX_FILENAME_CHARS)
    if "/" in value or "\\" in value:
        raise AzureOpenAIInvalidArgumentError(argument, "must be a file name, not a path (no '/' or '\\')")
    if '"' in value:
        # A multipart header cannot carry it faithfully: clients send %22, which the service stores as is.
        raise AzureOpenAIInvalidArgumentError(argument, 'must not contain a double quote (")')
    if value.strip() in (".", ".."):
        raise AzureOpenAIInvalidArgumentError(argument, f"{value!r} is not a file name")
    return value


def check_choice(value: Any, argument: str, allowed: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise AzureOpenAIInvalidArgumentError(
            argument, f"{_shown(value)} is not accepted here; expected one of: {', '.join(allowed)}"
        )
    return value


def check_bool(value: Any, argument: str) -> bool:
    if not isinstance(value, bool):
        raise AzureOpenAIInvalidArgumentError(argument, f"must be True or False, got {_shown(value)}")
    return value


def check_unix_time(value: Any, argument: str) -> float:
    """A finite UNIX time (seconds since the epoch), as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise AzureOpenAIInvalidArgumentError(argument, "must be a finite UNIX time")
    return float(value)


def check_seconds(
    value: Any,
    argument: str,
    *,
    minimum: float = 0.0,
    allow_zero: bool = False,
    maximum: float = MAX_SECONDS,
) -> float:
    """A finite number of seconds: > ``minimum`` (or >= it with ``allow_zero``), at most ``maximum``.

    The default ceiling (30 days) is longer than any wait that makes sense and keeps every deadline and
    sleep within what the clock and ``time.sleep`` can represent.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise AzureOpenAIInvalidArgumentError(argument, f"must be a number of seconds, got {_shown(value)}")
    number = float(value)
    if not math.isfinite(number):
        raise AzureOpenAIInvalidArgumentError(argument, f"must be a finite number of seconds, got {value!r}")
    if number < minimum or (number == minimum and not allow_zero):
        relation = "at least" if allow_zero else "more than"
        raise AzureOpenAIInvalidArgumentError(
            argument, f"must be {relation} {minimum:g} seconds, got {value!r}"
        )
    if number > maximum:
        raise AzureOpenAIInvalidArgumentError(argument, f"must be at most {maximum:g} seconds, got {value!r}")
    return number


def check_int(value: Any, argument: str, *, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise AzureOpenAIInvalidArgumentError(argument, f"must be an integer, got {_shown(value)}")
    if not minimum <= value <= maximum:
        raise AzureOpenAIInvalidArgumentError(argument, f"must be from {minimum} to {maximum}, got {value}")
    return value


def check_http_url(value: Any, argument: str) -> str:
    """An absolute http(s) URL the service can GET: valid host and port, no whitespace or control characters.

    Error messages show the URL redacted (no userinfo, no query values): it usually carries a SAS signature.
    """
    if not isinstance(value, str) or not value.strip():
        raise AzureOpenAIInvalidArgumentError(argument, "must be a non-empty http(s) URL")
    if len(value) > MAX_URL_CHARS:
        raise AzureOpenAIInvalidArgumentError(argument, f"is longer than {MAX_URL_CHARS} characters")
    if has_space_or_control(value):
        raise AzureOpenAIInvalidArgumentError(argument, "must not contain whitespace or control characters")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise AzureOpenAIInvalidArgumentError(argument, "is not a valid URL (bad host or port)") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise AzureOpenAIInvalidArgumentError(argument, f"{redact_url(value)!r} is not an http(s) URL")
    if port == 0:
        raise AzureOpenAIInvalidArgumentError(argument, "has port 0")
    if parts.username is not None or parts.password is not None:
        raise AzureOpenAIInvalidArgumentError(
            argument,
            "must not carry credentials before the host (user:password@); use a SAS or presigned URL",
        )
    if not is_valid_host(parts.hostname):
        raise AzureOpenAIInvalidArgumentError(argument, "has an invalid host name")
    return value


def check_stop(value: Any, argument: str = "stop") -> Any:
    """A stop event: ``None`` or a ``threading.Event`` (anything with ``is_set()`` and ``wait()``)."""
    if value is not None and not (
        callable(getattr(value, "is_set", None)) and callable(getattr(value, "wait", None))
    ):
        raise AzureOpenAIInvalidArgumentError(
            argument, f"must be a threading.Event (or None), got {type(value).__name__}"
        )
    return value


def check_expires_after(
    value: Any, purpose: str | None = None, argument: str = "expires_after"
) -> int | None:
    """Seconds after its creation that a file expires: ``None`` (it does not), or whole seconds in the range
    the service takes for ``purpose`` (when the purpose is not known yet, at DAG parse: the widest range)."""
    if value is None:
        return None
    low, high = expiry_range(purpose or "")
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        files = f"{purpose} files" if purpose else "files"
        raise AzureOpenAIInvalidArgumentError(
            argument,
            f"{files} may expire {low:,} to {high:,} seconds ({_duration(low)} to {_duration(high)}) after "
            f"they are created; got {_shown(value)}",
        )
    return value


def _duration(seconds: int) -> str:
    days, hours = divmod(seconds, 86400)[0], seconds // 3600
    return f"{days} days" if seconds % 86400 == 0 else f"{hours} hour{'s' if hours != 1 else ''}"
