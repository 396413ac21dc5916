"""The only code that speaks HTTP: URLs per surface, auth headers, api-version, retries, error mapping.

Addressing
    A request path is a sequence of segments (``("files", file_id, "content")``). Every segment is
    percent-encoded with nothing safe, so an id is always one opaque path segment: ``a/b``, ``..``, ``#`` or
    ``?`` inside an id can never reach another object or operation.

Answers
    A successful answer must be the JSON object the operation promises (see
    :func:`airflow_provider_aoai.models.check_object`): an HTML page, a JSON array or a list where a File
    was expected raises :class:`AzureOpenAIResponseError` with the status and request id, never passes as
    a success.

Retry policy
    * 408, 429, 500, 502, 503, 504 and connection errors are retried, at most ``max_retries`` times, with
      exponential backoff and full jitter, honouring ``retry-after-ms`` and ``Retry-After`` (seconds or an
      HTTP date); any other 4xx is final, and so is a TLS failure.
    * A request that creates something (a file, an upload) is retried only where the service cannot have
      acted on it: 408/429 answers and connections that never opened. A 5xx or a connection dropped
      mid-request may have created the file, so it is raised, never repeated: a retry must not leave a
      duplicate behind. (Completing an upload is not such a create: an upload completes at most once, so it
      is retried like a read; see ``AzureOpenAIHook.complete_upload``.) A create whose body is in memory
      goes on a connection opened for it, never a kept-alive one that may have died while idle.
    * A ``stop`` event ends the retries at once, and :meth:`AzureOpenAIClient.abort_in_flight` shuts the
      sockets of requests under way, so a killed task does not wait for them.
"""

from __future__ import annotations

import email.utils
import enum
import http.client
import json as json_module
import logging
import math
import os
import random
import re
import select
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import IO, Any, cast
from urllib.parse import quote, urlencode, urlsplit

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from airflow_provider_aoai.exceptions import (
    AzureOpenAIAPIError,
    AzureOpenAIConfigError,
    AzureOpenAIConnectionError,
    AzureOpenAIError,
    AzureOpenAIResponseError,
    AzureOpenAIStoppedError,
    api_error_class,
)
from airflow_provider_aoai.models import (
    MAX_CONCURRENCY,
    ObjectKind,
    Surface,
    check_object,
    has_space_or_control,
)
from airflow_provider_aoai.redaction import redact_url
from airflow_provider_aoai.urls import is_loopback, is_valid_host

log = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# Answers that prove the service did not act on the request.
NOT_ACTED_STATUSES = frozenset({408, 429})
DATA_PLANE_API_VERSION = "2024-10-21"
FOUNDRY_API_VERSION = "v1"
REQUEST_ID_HEADERS = ("apim-request-id", "x-request-id", "x-ms-request-id")
STREAM_CHUNK = 1024 * 1024
# How much of an error answer is read: its code, message and target come first; the rest is not worth
# the memory (a misbehaving service may send megabytes, or never stop).
ERROR_BODY_LIMIT = 64 * 1024
# How much of a successful answer is read (all but downloads are read whole): the largest the service sends,
# a list of every file of a resource, is a few MB; a service that sends more, or never stops, is refused.
ANSWER_LIMIT = 64 * 1024 * 1024
MAX_BACKOFF_SECONDS = 60.0

Path = Sequence[str]


class Retry(enum.Enum):
    """How far a request may be repeated."""

    SAFE = "safe"  # reads, deletes, cancels, parts, complete: repeating is harmless
    CREATE = "create"  # creates an object: repeat only what the service cannot have acted on


def normalize_endpoint(endpoint: str, api_version: str | None) -> tuple[str, Surface]:
    """Split a connection host into the base URL and the surface it addresses.

    :raises AzureOpenAIConfigError: not an http(s) URL, a bad port, credentials or a query in it, or plain
        http to a non-loopback host. Messages show the endpoint redacted.
    """
    endpoint = endpoint.strip().rstrip("/")
    shown = redact_url(endpoint)
    try:
        parts = urlsplit(endpoint)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise AzureOpenAIConfigError(f"the endpoint {shown!r} has an invalid host or port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AzureOpenAIConfigError(f"the endpoint {shown!r} is not an http(s) URL")
    if not is_valid_host(parts.hostname):
        raise AzureOpenAIConfigError(f"the endpoint {shown!r} has an invalid host name")
    if has_space_or_control(endpoint):
        raise AzureOpenAIConfigError("the endpoint must not contain whitespace or control characters")
    if parts.username is not None or parts.password is not None:
        raise AzureOpenAIConfigError(
            "the endpoint must not carry credentials (user:password@); put the api key in the password field"
        )
    if parts.query or parts.fragment:
        raise AzureOpenAIConfigError(f"the endpoint {shown!r} must not carry a query or fragment")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise AzureOpenAIConfigError(
            f"the endpoint {shown!r} uses plain http; only https is allowed (http only on loopback)"
        )
    path = parts.path
    if "/api/projects/" in f"{path}/":
        return endpoint, Surface.FOUNDRY
    base = f"{parts.scheme}://{parts.netloc}"
    if path.endswith("/openai/v1") or api_version in ("v1", "preview"):
        return base + path.removesuffix("/openai/v1"), Surface.V1
    return base + path.removesuffix("/openai"), Surface.DATA_PLANE


def parse_retry_after(headers: Any) -> float | None:
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


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and everything it wraps (requests and urllib3 nest the real cause several levels deep)."""
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        for nested in (
            current.__cause__,
            current.__context__,
            getattr(current, "reason", None),
            *current.args,
        ):
            if isinstance(nested, BaseException):
                stack.append(nested)


def _never_sent(exc: requests.RequestException) -> bool:
    """True when the connection never opened, so the service cannot have seen the request."""
    if isinstance(exc, (requests.exceptions.ConnectTimeout, _ConnectFailed)):
        return True
    never_sent = (
        urllib3.exceptions.NewConnectionError,
        urllib3.exceptions.ConnectTimeoutError,
        urllib3.exceptions.ClosedPoolError,  # the client was closed before a connection was taken
    )
    return any(isinstance(e, never_sent) for e in _chain(exc))


def describe_connection_error(exc: BaseException, timeout: float) -> str:
    """Why a request did not reach the service, in words: name not resolved, refused, timed out, TLS, ..."""
    chain = list(_chain(exc))
    if any(isinstance(e, _AbortedWhileOpening) for e in chain):
        return "aborted while the connection opened (the task is being killed); nothing was sent"
    name_error = getattr(urllib3.exceptions, "NameResolutionError", ())
    if any(isinstance(e, socket.gaierror) or (name_error and isinstance(e, name_error)) for e in chain):
        return "the host name could not be resolved"
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return "the connection was refused (nothing listens on that host and port)"
    for e in chain:
        if isinstance(e, ssl.SSLCertVerificationError):
            return f"TLS failed: {e.verify_message or 'certificate verification failed'}"
    if any(isinstance(e, (ssl.SSLError, requests.exceptions.SSLError)) for e in chain):
        return "TLS failed (the TLS handshake did not complete)"
    if any(
        isinstance(
            e, (TimeoutError, socket.timeout, requests.exceptions.Timeout, urllib3.exceptions.TimeoutError)
        )
        for e in chain
    ):
        return f"no answer within {timeout:g}s (timed out)"
    if any(isinstance(e, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)) for e in chain):
        return "the connection was closed by the other side"
    if any(isinstance(e, ValueError) for e in chain):  # a negative chunk size, say
        return "the answer's framing is not valid HTTP"
    if any(isinstance(e, (urllib3.exceptions.ProtocolError, http.client.HTTPException)) for e in chain):
        return "the connection was closed before an answer arrived"
    return type(exc).__name__


def _error_body(response: Any) -> tuple[bytes, bool]:
    """At most :data:`ERROR_BODY_LIMIT` bytes of an error answer, and whether there was more.

    An error answer is read only this far: a service that sends a huge or endless one costs nothing more.
    """
    if isinstance(response, _ReadAnswer):
        return response.body, response.truncated
    raw = getattr(response, "raw", None)
    if getattr(response, "_content_consumed", True) or raw is None:
        content = response.content or b""
        return content[:ERROR_BODY_LIMIT], len(content) > ERROR_BODY_LIMIT
    try:
        content = raw.read(ERROR_BODY_LIMIT + 1, decode_content=True) or b""
    except Exception:
        content = b""
    return content[:ERROR_BODY_LIMIT], len(content) > ERROR_BODY_LIMIT


# The first fields of an error body cut short, where it no longer parses as JSON.
_CUT_FIELDS = {
    name: re.compile(rf'"{name}"\s*:\s*"((?:[^"\\]|\\.)*)') for name in ("code", "message", "target", "param")
}


def error_from_response(response: requests.Response) -> AzureOpenAIAPIError:
    """Map an error answer of any surface (ErrorResponse, AzureErrorResponse, AgentV1Error) to an error."""
    code = message = target = None
    content, truncated = _error_body(response)
    try:
        body = json_module.loads(content)
    except ValueError:
        body = None
    if isinstance(body, dict):
        nested = body.get("error")
        error: dict[str, Any] = nested if isinstance(nested, dict) else body
        code = error.get("code")
        message = error.get("message")
        target = error.get("target") or error.get("param")
    elif truncated:
        text = content.decode("utf-8", "replace")
        found = {
            name: match.group(1) for name, pattern in _CUT_FIELDS.items() if (match := pattern.search(text))
        }
        code, message = found.get("code"), found.get("message")
        target = found.get("target") or found.get("param")
    if code is not None:
        code = str(code)
    if not message:
        message = response.reason or "no error message in the response"
    return api_error_class(response.status_code)(
        response.status_code,
        code,
        str(message),
        target=str(target) if target is not None else None,
        request_id=request_id_of(response),
    )


def request_id_of(response: requests.Response) -> str | None:
    return next((response.headers[h] for h in REQUEST_ID_HEADERS if h in response.headers), None)


class MultipartBody:
    """A streamed multipart/form-data body with a known length: requests sends it with Content-Length.

    The form text fields come first, then one file field whose bytes come from ``content()``: a callable that
    returns a fresh iterator of exactly ``size`` bytes for every attempt (so a retried request sends the body
    again). ``on_bytes(n)`` is told of every chunk handed to the socket, and of ``-n`` when an attempt starts
    over. A set ``stop`` event ends the body between chunks with :class:`AzureOpenAIStoppedError`; an
    exception from ``content()`` (a source that changed) ends it the same way, before the closing boundary,
    so the service never receives a complete body.
    """

    def __init__(
        self,
        *,
        fields: dict[str, str],
        file_field: str,
        filename: str,
        size: int,
        content: Callable[[], Iterable[bytes | memoryview]],
        content_type: str = "application/octet-stream",
        on_bytes: Callable[[int], None] | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        import secrets

        from urllib3.fields import format_multipart_header_param as param  # HTML5 escaping, as requests does

        self.boundary = "aoai" + secrets.token_hex(16)
        head = "".join(
            f"--{self.boundary}\r\nContent-Disposition: form-data; {param('name', name)}\r\n\r\n{value}\r\n"
            for name, value in fields.items()
        )
        head += (
            f"--{self.boundary}\r\nContent-Disposition: form-data; {param('name', file_field)}; "
            f"{param('filename', filename)}\r\nContent-Type: {content_type}\r\n\r\n"
        )
        self._head = head.encode()
        self._tail = f"\r\n--{self.boundary}--\r\n".encode()
        self.size = size
        self._content = content
        self._on_bytes = on_bytes
        self._stop = stop
        self._sent = 0

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def __len__(self) -> int:
        return len(self._head) + self.size + len(self._tail)

    def _report(self, count: int) -> None:
        self._sent += count
        if self._on_bytes is not None:
            self._on_bytes(count)

    def __iter__(self) -> Iterator[bytes | memoryview]:
        if self._sent:
            self._report(-self._sent)  # a retry starts over
        yield self._head
        remaining = self.size
        for chunk in self._content():
            if self._stop is not None and self._stop.is_set():
                raise AzureOpenAIStoppedError("the upload was stopped (the task is being killed)")
            remaining -= len(chunk)
            if remaining < 0:  # the content callable promised exactly `size` bytes
                raise AzureOpenAIError("the request body is longer than announced")
            yield chunk
            self._report(len(chunk))
        if remaining:
            raise AzureOpenAIError(f"the request body ended {remaining} bytes early")
        yield self._tail


class _ReadAnswer:
    """An answer read whole (a success at most :data:`ANSWER_LIMIT` bytes, an error at most
    :data:`ERROR_BODY_LIMIT`; ``truncated`` when there was more), with the part of ``requests.Response`` this
    module reads."""

    def __init__(self, raw: Any, body: bytes, truncated: bool = False) -> None:
        self.status_code: int = raw.status
        self.reason: str = raw.reason or ""
        self.headers = raw.headers  # case-insensitive, like requests'
        self.body = body
        self.truncated = truncated

    @property
    def content(self) -> bytes:
        return self.body

    def json(self) -> Any:
        """:raises ValueError: the body is not JSON."""
        return json_module.loads(self.body)

    def close(self) -> None:
        pass  # read whole: the connection is back in its pool already


def _body_limit(status: int) -> int:
    return ANSWER_LIMIT if status < 300 else ERROR_BODY_LIMIT


def _read_at_most(raw: http.client.HTTPResponse, limit: int) -> tuple[bytes, bool]:
    """At most ``limit`` bytes of an ``http.client`` answer's body, and whether there was more (then only
    its first :data:`ERROR_BODY_LIMIT` bytes are kept: all an error message needs).

    :raises http.client.IncompleteRead: the connection closed before the announced length arrived.
    """
    content = bytearray()
    while len(content) <= limit:
        chunk = raw.read(min(STREAM_CHUNK, limit + 1 - len(content)))
        if not chunk:
            break
        content += chunk
    if len(content) > limit:
        del content[min(limit, ERROR_BODY_LIMIT) :]
        return bytes(content), True
    if raw.length:  # the body ended before its Content-Length
        raise http.client.IncompleteRead(bytes(content), raw.length)
    return bytes(content), False


def _read_whole(response: requests.Response) -> _ReadAnswer:
    """Read an answer of the requests path as the keep-alive path reads its own (see :class:`_ReadAnswer`).

    :raises requests.RequestException: the body broke off or timed out (a connection error, as requests
        raises it).
    """
    limit = _body_limit(response.status_code)
    try:
        content = response.raw.read(limit + 1, decode_content=True) or b""
    except urllib3.exceptions.ReadTimeoutError as exc:
        raise requests.exceptions.ReadTimeout(exc) from exc
    except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:  # ValueError: a bad chunk size
        raise requests.exceptions.ConnectionError(exc) from exc
    finally:
        response.close()
    if len(content) > limit:
        return _ReadAnswer(response.raw, content[: min(limit, ERROR_BODY_LIMIT)], True)
    return _ReadAnswer(response.raw, content)


class _InFlight:
    """The connections a client has checked out right now, so :meth:`abort` can shut their sockets."""

    def __init__(self) -> None:
        self._connections: weakref.WeakSet[Any] = weakref.WeakSet()
        self._lock = threading.Lock()
        self.aborts = 0  # how often abort() ran: a connection that opened meanwhile sends nothing

    def add(self, connection: Any) -> None:
        with self._lock:
            self._connections.add(connection)

    def discard(self, connection: Any) -> None:
        with self._lock:
            self._connections.discard(connection)

    def abort(self) -> int:
        with self._lock:
            self.aborts += 1
            connections = list(self._connections)
        aborted = 0
        for connection in connections:
            sock = getattr(connection, "sock", None)
            if sock is None:
                continue
            try:
                sock.shutdown(socket.SHUT_RDWR)
                aborted += 1
            except OSError:
                pass  # already closed
        return aborted


class _ConnectFailed(requests.exceptions.ConnectionError):
    """The connection did not open (refused, name not resolved): the service never saw the request."""


class _AbortedWhileOpening(_ConnectFailed):
    """The client was aborted (the task is being killed) while the connection opened: nothing was sent."""


def _tls_context(verify: bool | str | None) -> ssl.SSLContext:
    """The TLS settings requests would use: verified (host name included) against its CA bundle, or the
    bundle file or directory ``verify`` names (``REQUESTS_CA_BUNDLE``). A client never turns verification
    off."""
    where = verify if isinstance(verify, str) else requests.utils.DEFAULT_CA_BUNDLE_PATH
    try:
        if os.path.isdir(where):
            context = ssl.create_default_context(capath=where)
        else:
            context = ssl.create_default_context(cafile=where)
    except (ssl.SSLError, OSError) as exc:
        reason = exc.strerror or getattr(exc, "reason", None) or type(exc).__name__
        raise AzureOpenAIConfigError(
            f"The CA bundle {where!r} (REQUESTS_CA_BUNDLE, or requests' own) cannot be used: {reason}"
        ) from None
    context.set_alpn_protocols(["http/1.1"])
    return context


def _dropped(sock: socket.socket) -> bool:
    """True when an idle kept-alive socket has been closed by the other side (or has stray bytes to read,
    including bytes TLS has already decrypted)."""
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


class KeepAliveConnections:
    """Keep-alive connections to a client's one host on the standard library's ``http.client``, for every
    request whose body is in memory (all but streamed uploads and downloads) when no proxy applies.

    A triggerer polling a thousand files makes a hundred status requests a second; on ``http.client`` one
    costs about half the CPU it costs through urllib3's pool, timeout and response objects (0.25 against
    0.5 ms on a 2-core VM). What the service sees is the same request. TLS is verified as requests verifies
    it (its CA bundle, or ``REQUESTS_CA_BUNDLE``). An answer is read whole (see :class:`_ReadAnswer`), after
    any interim 1xx answers; a connection is reused only once its answer was read to the end, and not if
    the service has closed it meanwhile. A create always goes on a connection of its own, opened for it: on
    a kept-alive one that a load balancer dropped while idle it would fail as "may have acted" although
    nothing reached the service. Failures are raised as requests raises them, so the client's retry policy
    treats both transports alike. Thread-safe: a connection serves one request at a time.

    :raises AzureOpenAIConfigError: the CA bundle cannot be read.
    """

    def __init__(self, base_url: str, verify: bool | str | None, in_flight: _InFlight, size: int) -> None:
        parts = urlsplit(base_url)
        self._host = parts.hostname or ""
        self._port = parts.port
        self._context = _tls_context(verify) if parts.scheme == "https" else None
        self._in_flight = in_flight
        self._size = size
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._generation = 0  # close() starts a new one: a connection of an older one is not kept

    def _take(self, timeout: float, fresh: bool) -> tuple[http.client.HTTPConnection, int]:
        connection: http.client.HTTPConnection | None = None
        with self._lock:
            generation = self._generation
            while self._idle and connection is None and not fresh:
                connection = self._idle.pop()
                if connection.sock is None or _dropped(connection.sock):
                    connection.close()
                    connection = None
        if connection is not None:
            cast(socket.socket, connection.sock).settimeout(timeout)
        elif self._context is not None:
            connection = http.client.HTTPSConnection(
                self._host, self._port, timeout=timeout, context=self._context
            )
        else:
            connection = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        connection.response_class = _FinalResponse
        self._in_flight.add(connection)
        return connection, generation

    def _give_back(self, connection: http.client.HTTPConnection, generation: int, reusable: bool) -> None:
        self._in_flight.discard(connection)
        if reusable and connection.sock is not None:
            with self._lock:
                if generation == self._generation and len(self._idle) < self._size:
                    self._idle.append(connection)
                    return
        connection.close()

    def close(self) -> None:
        """Close the idle connections; those in use are closed when their request ends."""
        with self._lock:
            self._generation += 1
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def _open(self, connection: http.client.HTTPConnection) -> None:
        aborts = self._in_flight.aborts
        try:
            connection.connect()
        except TimeoutError as exc:
            raise requests.exceptions.ConnectTimeout(exc) from exc
        except ssl.SSLError as exc:
            raise requests.exceptions.SSLError(exc) from exc
        except OSError as exc:
            raise _ConnectFailed(exc) from exc
        if self._in_flight.aborts != aborts:  # killed while connecting: send nothing
            raise _AbortedWhileOpening()

    def send(
        self,
        method: str,
        target: str,
        body: bytes | None,
        headers: dict[str, str],
        timeout: float,
        *,
        fresh: bool = False,
    ) -> requests.Response:
        """Send one request (``target`` in origin form) and read its answer.

        :param fresh: on a new connection (for a create), never a kept-alive one.
        :raises requests.RequestException: as requests would raise it (connect timeout, TLS, read timeout,
            connection error), so that the caller's retry policy applies unchanged.
        :raises AzureOpenAIConfigError: a header value cannot be sent (the value is not shown).
        """
        connection, generation = self._take(timeout, fresh)
        reusable = False
        try:
            if connection.sock is None:
                self._open(connection)
            unsent: OSError | None = None
            try:
                connection.request(method, target, body=body, headers=headers)
            except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError) as exc:
                unsent = exc  # the service may have answered before taking it all (a 413): read that
            except ValueError:
                names = ", ".join(sorted(headers))
                raise AzureOpenAIConfigError(
                    f"{method} cannot be sent: a header value ({names}) has a line break or a character "
                    "HTTP cannot carry"
                ) from None
            try:
                raw = connection.getresponse()
                content, truncated = _read_at_most(raw, _body_limit(raw.status))  # broken off: retried
                reusable = unsent is None and raw.isclosed() and not raw.will_close
            except TimeoutError as exc:
                raise requests.exceptions.ReadTimeout(exc) from exc
            except ssl.SSLError as exc:
                raise requests.exceptions.SSLError(exc) from exc
            except (http.client.HTTPException, OSError, ValueError) as exc:
                raise requests.exceptions.ConnectionError(unsent or exc) from (unsent or exc)
        finally:
            self._give_back(connection, generation, reusable)
        return cast(requests.Response, _ReadAnswer(raw, content, truncated))


class _FinalResponse(http.client.HTTPResponse):
    """An ``http.client`` answer that skips every interim (1xx) answer before the final one.

    ``http.client`` skips only ``100 Continue``: a ``103 Early Hints`` or ``102 Processing`` would be taken
    for the answer, and the real one, still on its way, would be read as the answer to the next request on
    the connection. A ``101`` is never asked for; what follows it is not HTTP (a connection error).
    """

    def _read_status(self) -> tuple[str, int, str]:
        while True:
            version, status, reason = super()._read_status()  # type: ignore[misc]
            if not 100 <= status < 200:
                return version, status, reason
            http.client.parse_headers(self.fp)  # the interim answer's headers


def _tracked_pool(base: type[HTTPConnectionPool], in_flight: _InFlight) -> type[HTTPConnectionPool]:
    class TrackedPool(base):  # type: ignore[valid-type,misc]
        def _get_conn(self, timeout: float | None = None) -> Any:
            connection = super()._get_conn(timeout)
            connection.response_class = _FinalResponse
            in_flight.add(connection)
            return connection

        def _put_conn(self, conn: Any) -> None:
            if conn is not None:
                in_flight.discard(conn)
            super()._put_conn(conn)

    return TrackedPool


class _TrackedAdapter(HTTPAdapter):
    """requests' adapter whose pools, direct or through an HTTP(S) proxy, track their connections in
    ``in_flight`` (so a kill can shut them) and skip interim answers (see :class:`_FinalResponse`)."""

    def __init__(self, in_flight: _InFlight, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._pool_classes = {
            "http": _tracked_pool(HTTPConnectionPool, in_flight),
            "https": _tracked_pool(HTTPSConnectionPool, in_flight),
        }
        self.poolmanager.pool_classes_by_scheme = self._pool_classes

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):  # SOCKS proxies keep their own pool classes
            manager.pool_classes_by_scheme = self._pool_classes
        return manager


class AzureOpenAIClient:
    """A pooled, thread-safe HTTP client for one endpoint and surface.

    :param endpoint: resource endpoint or Foundry project endpoint (see :func:`normalize_endpoint`).
    :param auth: an object whose ``headers()`` gives the auth headers (see ``credentials``).
    :param api_version: data plane api-version (default ``2024-10-21``); ``v1``/``preview`` select v1.
    :param timeout: seconds to wait for the service to answer (connect and each read).
    :param max_retries: how many times a retryable failure is repeated.
    :param backoff_seconds: first backoff; doubles each retry, with jitter, capped at ``max_backoff_seconds``.
    :param pool_size: connections kept open for reuse (as many as parts may be sent in parallel).
    """

    def __init__(
        self,
        *,
        endpoint: str,
        auth: Any,
        api_version: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 5,
        backoff_seconds: float = 0.5,
        max_backoff_seconds: float = MAX_BACKOFF_SECONDS,
        pool_size: int = MAX_CONCURRENCY,
    ) -> None:
        self.base_url, self.surface = normalize_endpoint(endpoint, api_version)
        if self.surface is Surface.DATA_PLANE:
            self.api_version: str | None = api_version or DATA_PLANE_API_VERSION
        elif self.surface is Surface.FOUNDRY:
            self.api_version = (
                FOUNDRY_API_VERSION if api_version in (None, "v1", DATA_PLANE_API_VERSION) else api_version
            )
        else:
            self.api_version = api_version if api_version not in (None, "v1") else None
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise AzureOpenAIConfigError("max_retries must be an integer, 0 or more")
        for name, value in (("timeout", timeout), ("retry_backoff", backoff_seconds)):
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not 0 <= value < float("inf")
            ):
                raise AzureOpenAIConfigError(f"{name} must be a finite number, 0 or more")
        if timeout <= 0:
            raise AzureOpenAIConfigError("timeout must be more than 0 seconds")
        self.auth = auth
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.backoff_seconds = float(backoff_seconds)
        self.max_backoff_seconds = max_backoff_seconds
        self._in_flight = _InFlight()
        self.session = requests.Session()
        # Proxies (honouring NO_PROXY) and REQUESTS_CA_BUNDLE come from the environment, read once here for
        # the one host this client talks to: requests would walk os.environ twice per request (about 0.3 ms,
        # a third of a status poll's cost), and would read ~/.netrc every time.
        self.session.trust_env = False
        self.session.proxies = requests.utils.get_environ_proxies(self.base_url)
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if bundle:
            self.session.verify = bundle
        self._prefix = {Surface.DATA_PLANE: "/openai", Surface.V1: "/openai/v1", Surface.FOUNDRY: ""}[
            self.surface
        ]
        self._base_path = urlsplit(self.base_url).path
        # What requests would send besides the caller's headers; answers come uncompressed (they are small).
        self._direct_headers = {
            "User-Agent": str(self.session.headers["User-Agent"]),
            "Accept-Encoding": "identity",
        }
        adapter = _TrackedAdapter(
            self._in_flight, pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0
        )
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        # Keep-alive connections for requests whose body is in memory; none when a proxy applies (proxies,
        # and their headers, are left to requests).
        self._direct = (
            None
            if self.session.proxies
            else KeepAliveConnections(self.base_url, self.session.verify, self._in_flight, pool_size)
        )

    def _send_direct(
        self,
        direct: KeepAliveConnections,
        method: str,
        shown: str,
        query: dict[str, Any],
        payload: Any,
        headers: dict[str, str],
        wait: float,
        fresh: bool,
    ) -> requests.Response:
        target = f"{self._base_path}{self._prefix}/{shown}"  # origin-form, as requests sends
        if query:
            target = f"{target}?{urlencode(query)}"
        all_headers = {**self._direct_headers, **headers}
        data = None
        if payload is not None:
            data = json_module.dumps(payload, allow_nan=False).encode()
            all_headers["Content-Type"] = "application/json"
        return direct.send(method, target, data, all_headers, wait, fresh=fresh)

    @property
    def host(self) -> str:
        """The endpoint's scheme, host and port, for messages."""
        parts = urlsplit(self.base_url)
        return f"{parts.scheme}://{parts.netloc}"

    def url(self, path: Path) -> str:
        """The URL of ``path``; every segment is percent-encoded with nothing safe (an id is one segment)."""
        return f"{self.base_url}{self._prefix}/{self._quoted(path)}"

    @staticmethod
    def _quoted(path: Path) -> str:
        if isinstance(path, str):
            raise TypeError("path must be a sequence of segments, e.g. ('files', file_id)")
        return "/".join(quote(segment, safe="") for segment in path)

    def close(self) -> None:
        """Close idle connections; requests under way finish, and a later request opens new ones."""
        if self._direct is not None:
            self._direct.close()
        self.session.close()

    def abort_in_flight(self) -> int:
        """Shut the sockets of every request under way (they fail at once); returns how many were shut."""
        return self._in_flight.abort()

    def _backoff(self, attempt: int, response: requests.Response | None) -> float:
        if response is not None:
            retry_after = parse_retry_after(response.headers)
            if retry_after is not None:
                return min(retry_after, self.max_backoff_seconds)
        ceiling = min(self.max_backoff_seconds, self.backoff_seconds * (2**attempt))
        return random.uniform(ceiling / 2, ceiling)

    def request(
        self,
        method: str,
        path: Path,
        *,
        retry: Retry = Retry.SAFE,
        params: dict[str, Any] | None = None,
        json: Any = None,
        body: MultipartBody | None = None,
        stream: bool = False,
        stop: threading.Event | None = None,
        max_retries: int | None = None,
        timeout: float | None = None,
    ) -> requests.Response:
        """Send one logical request, retrying per the policy above; return a successful response.

        :param stop: when set, no further attempt is made and waiting between attempts ends at once.
        :param max_retries: overrides the client's retries for this request (``test_connection`` uses 0).
        :param timeout: overrides the client's timeout for this request.
        :raises AzureOpenAIAPIError: (a subclass per status) when the service answers an error.
        :raises AzureOpenAIConnectionError: when the service cannot be reached.
        :raises AzureOpenAIStoppedError: ``stop`` was set.
        """
        shown = self._quoted(path)
        url = f"{self.base_url}{self._prefix}/{shown}"
        query = dict(params or {})
        if self.api_version:
            query["api-version"] = self.api_version
        retries = self.max_retries if max_retries is None else max_retries
        wait = self.timeout if timeout is None else timeout
        attempt = 0
        while True:
            if stop is not None and stop.is_set():
                raise AzureOpenAIStoppedError(f"{method} {shown} stopped: the task is being killed")
            headers = {"Accept": "application/json", **self.auth.headers()}
            if body is not None:
                headers["Content-Type"] = body.content_type
            response: requests.Response | None = None
            try:
                direct = self._direct if body is None and not stream else None
                if direct is not None:
                    fresh = retry is Retry.CREATE  # never on a kept-alive connection that may be dead
                    response = self._send_direct(direct, method, shown, query, json, headers, wait, fresh)
                else:
                    response = self.session.request(
                        method,
                        url,
                        params=query,
                        json=json,
                        data=cast(Any, body),  # an iterable with __len__: streamed with Content-Length
                        headers=headers,
                        timeout=wait,
                        stream=True,  # read below (a download's by the caller): an error's only so far
                        allow_redirects=False,
                    )
                    if not stream:
                        response = cast(requests.Response, _read_whole(response))
            except urllib3.exceptions.LocationValueError:
                raise AzureOpenAIConfigError(f"{self.host} cannot be requested: the URL is invalid") from None
            except requests.RequestException as exc:
                if stop is not None and stop.is_set():
                    raise AzureOpenAIStoppedError(
                        f"{method} {shown} stopped: the task is being killed"
                    ) from None
                tls = any(isinstance(e, ssl.SSLError) for e in _chain(exc))
                # A certificate that fails verification will fail again: never retried.
                retryable = not tls and (retry is Retry.SAFE or _never_sent(exc))
                reason = describe_connection_error(exc, wait)
                if not retryable or attempt >= retries:
                    maybe_acted = not retryable and not tls and not _never_sent(exc)
                    raise AzureOpenAIConnectionError(
                        f"{method} {shown} to {self.host} failed: {reason} (after {attempt + 1} attempt(s))"
                        + ("; not retried because the service may have acted on it" if maybe_acted else "")
                    ) from None
            else:
                if response.status_code < 300:
                    if isinstance(response, _ReadAnswer) and response.truncated:
                        raise AzureOpenAIResponseError(
                            response.status_code,
                            "answerTooLarge",
                            f"{method} {shown}: the answer is larger than {ANSWER_LIMIT // 2**20} MiB, more "
                            "than the service ever sends; it was not read further",
                            request_id=request_id_of(response),
                        )
                    return response
                if response.status_code < 400:
                    response.close()  # a redirect would re-send credentials elsewhere; never followed
                    raise AzureOpenAIResponseError(
                        response.status_code,
                        "unexpectedRedirect",
                        f"{method} {shown} answered a redirect; redirects are not followed",
                        request_id=request_id_of(response),
                    )
                retryable = response.status_code in (
                    RETRYABLE_STATUSES if retry is Retry.SAFE else NOT_ACTED_STATUSES
                )
                if not retryable or attempt >= retries:
                    error = error_from_response(response)
                    response.close()
                    raise error
                reason = f"HTTP {response.status_code}"
            delay = self._backoff(attempt, response)
            if response is not None:
                response.close()
            attempt += 1
            log.warning("%s %s: %s; retry %d of %d in %.2fs", method, shown, reason, attempt, retries, delay)
            if stop is not None:
                if stop.wait(delay):
                    raise AzureOpenAIStoppedError(f"{method} {shown} stopped: the task is being killed")
            else:
                time.sleep(delay)

    def download(
        self, path: Path, open_out: Callable[[], IO[bytes]], *, stop: threading.Event | None = None
    ) -> int:
        """Stream the body of ``GET path`` in 1 MiB chunks into ``open_out()``; return the byte count.

        ``open_out`` is called only once the service answered success, so an error answer (a 404) never
        creates or truncates anything.
        """
        response = self.request("GET", path, stream=True, stop=stop)
        size = 0
        try:
            out = open_out()
            chunks = response.iter_content(STREAM_CHUNK)
            while True:
                try:
                    chunk = next(chunks, None)
                except (requests.RequestException, ValueError) as exc:  # ValueError: a bad chunk size
                    raise AzureOpenAIConnectionError(
                        f"GET {self._quoted(path)} from {self.host} broke off after {size} bytes: "
                        f"{describe_connection_error(exc, self.timeout)}"
                    ) from None
                if chunk is None:
                    break
                if stop is not None and stop.is_set():
                    raise AzureOpenAIStoppedError("the download was stopped (the task is being killed)")
                out.write(chunk)
                size += len(chunk)
        finally:
            response.close()
        return size

    def request_object(
        self,
        method: str,
        path: Path,
        *,
        expect: ObjectKind,
        expect_id: str | None = None,
        expect_parent: str | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """:meth:`request`, then the answer's JSON object, checked to be the ``expect`` kind (and id).

        :raises AzureOpenAIResponseError: the answer is not JSON, not an object, or not what was asked for.
        """
        response = self.request(method, path, **kwargs)
        try:
            try:
                payload = response.json()
            except ValueError:
                payload = None
                problem: str | None = (
                    f"the answer is not JSON (Content-Type {response.headers.get('content-type', 'none')!r})"
                )
            else:
                problem = check_object(payload, expect, expect_id, expect_parent)
            if problem is not None:
                raise AzureOpenAIResponseError(
                    response.status_code,
                    "unexpectedResponse",
                    f"{method} {self._quoted(path)}: {problem}",
                    request_id=request_id_of(response),
                )
            return payload
        finally:
            response.close()
