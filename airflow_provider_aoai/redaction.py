"""One redaction rule for every text this project builds: exceptions, logs, test results, emulator bodies.

:func:`redact` removes

* every secret registered with :func:`register_secret` (api keys, client secrets, tokens, SAS signatures; the
  credentials module registers each one as soon as it reads or obtains it),
* the userinfo of any URL (``scheme://user:password@host``),
* the value of every query parameter of any URL, and of ``name=value`` pairs that follow a ``?`` or ``&``,

and truncates the result to :data:`MAX_MESSAGE_CHARS`. It is deliberately stricter than Airflow's secrets
masker, which only hides values it was told about and only in task logs: what we build is clean before it
leaves us, wherever it goes (XCom, ``test_connection``'s answer, the UI, an emulator response).

Standard library only: the emulator and the hook both use it.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit, urlunsplit

from airflow_provider_aoai.urls import authority

REDACTED = "***"
MAX_MESSAGE_CHARS = 1024
# Shorter values are too likely to occur by chance in ordinary text to be replaced blindly.
MIN_SECRET_CHARS = 4

_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_pattern: re.Pattern[str] | None = None

# scheme://[userinfo@]rest-of-url, up to whitespace or a quote/bracket that usually closes it.
# (The scheme may be glued to what precedes it, "1http://", and be of any length a scheme can have.)
_URL = re.compile(r"(?i)([a-z][a-z0-9+.\-]{0,31})://([^\s'\"<>()\[\]{}]*)")
_USERINFO = re.compile(r"(?i)(//)[^/\s@'\"]*@")
# user:password@ after // anywhere, even where the URL above stops early (a "(" or "'" in the password).
_LOOSE_USERINFO = re.compile(r"//[^/\s@:]{0,512}:[^/\s@]{0,512}@")
# name=value after ? or & (a query string outside a recognisable URL, e.g. "...?sig=abc").
_QUERY_PAIR = re.compile(r"([?&][^=&\s'\"#]{1,256}=)[^&\s'\"#]*")


def register_secret(value: str | None) -> None:
    """Remember ``value`` as a secret: :func:`redact` replaces it wherever it appears."""
    global _pattern
    if not isinstance(value, str) or len(value) < MIN_SECRET_CHARS:
        return
    with _secrets_lock:
        if value in _secrets:
            return
        _secrets.add(value)
        ordered = sorted(_secrets, key=len, reverse=True)  # longest first: a secret may contain another
        _pattern = re.compile("|".join(re.escape(s) for s in ordered))


def redact_url(url: str) -> str:
    """``url`` safe to show: userinfo dropped, every query value replaced by ``***``, fragment dropped."""
    try:
        parts = urlsplit(url)
        netloc = authority(parts)
    except ValueError:
        return "<invalid url>"
    query = "&".join(
        f"{pair.split('=', 1)[0]}={REDACTED}" if "=" in pair else REDACTED
        for pair in parts.query.split("&")
        if pair
    )
    return _remove_secrets(urlunsplit((parts.scheme, netloc, parts.path, query, "")))


def redact_encoded(text: str) -> str:
    """:func:`redact` (untruncated) for text that may be percent-encoded once or more (a path segment, an
    id): when decoding reveals something the rule removes, the decoded text comes back redacted."""
    decoded = text
    for _ in range(4):  # %253F -> %3F -> ?
        step = unquote(decoded, errors="replace")
        if step == decoded:
            break
        decoded = step
    clean = redact(decoded, limit=None)
    return clean if clean != decoded else redact(text, limit=None)


def _remove_secrets(text: str) -> str:
    pattern = _pattern
    return pattern.sub(REDACTED, text) if pattern is not None else text


def _redact_url_match(match: re.Match[str]) -> str:
    return _redact_embedded_url(match.group(0))


def _redact_embedded_url(url: str) -> str:
    # A URL inside free text: keep it readable but never its credentials or query values.
    url = _USERINFO.sub(r"\1", url)
    return _QUERY_PAIR.sub(lambda m: m.group(1) + REDACTED, url)


def redact(text: object, *, secrets: Iterable[str | None] = (), limit: int | None = MAX_MESSAGE_CHARS) -> str:
    """``text`` with every known secret, URL userinfo and query value replaced by ``***``, then truncated.

    :param secrets: more values to remove from this text only (they are not registered).
    :param limit: the longest result, in characters; ``None`` keeps the whole text.
    """
    result = str(text)
    extra = sorted(
        (s for s in secrets if isinstance(s, str) and len(s) >= MIN_SECRET_CHARS), key=len, reverse=True
    )
    for secret in extra:
        result = result.replace(secret, REDACTED)
    result = _remove_secrets(result)
    result = _LOOSE_USERINFO.sub("//", result)
    result = _URL.sub(_redact_url_match, result)
    result = _QUERY_PAIR.sub(lambda m: m.group(1) + REDACTED, result)
    if limit is not None and len(result) > limit:
        result = f"{result[:limit]}... ({len(result) - limit} more characters)"
    return result
