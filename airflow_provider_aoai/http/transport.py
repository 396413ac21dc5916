"""The one HTTP stack: requests' adapter picks and configures urllib3's pools, urllib3 sends and reads.

What requests does here: the proxy of the environment (``HTTP(S)_PROXY``, ``NO_PROXY``, SOCKS), TLS verified
against its CA bundle or ``REQUESTS_CA_BUNDLE``, the pools and proxy managers, read once for the one host a
client talks to. What urllib3 does: connections, sending (a streamed body with its ``Content-Length``),
reading answers (decoding gzip), timeouts. Requests go to ``urlopen`` of the pool directly rather than
through ``requests.Session``: a status poll then costs about half the CPU (measured, see
``benchmarks/RESULTS.md``), and a triggerer makes a hundred of them a second.

What this module adds on top, and why:

* **Tracked connections.** :meth:`Transport.abort_in_flight` shuts the sockets of the requests under way (a
  task being killed does not wait for them); a connection that opens after an abort sends nothing.
* **Creates on a connection of their own.** A kept-alive connection may have been dropped while idle (a load
  balancer forgets idle flows after 4 minutes): a create sent on it would fail as "may have acted" with
  nothing sent, and would never be repeated. ``fresh=True`` takes a connection opened for the request and
  closes it afterwards.
* **Answers read at most to their limit** (:func:`~airflow_provider_aoai.http.policy.body_limit`), decoded
  in steps, so an endless or decompression-bomb answer costs at most that.
* **Interim answers skipped.** ``http.client``, under urllib3, skips only ``100 Continue``: a ``103 Early
  Hints`` (a CDN in front of the service may send one) would be taken for the answer and the real one read
  as the answer to the next request. urllib3 2.8 does not skip them either (measured); the connections here
  read past every 1xx.

Every failure to get an answer is a :class:`TransportError` whose :class:`~airflow_provider_aoai.http.policy.
Failure` says whether the request may have reached the service; the client's policy decides the rest.
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
import weakref
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from airflow_provider_aoai.exceptions import AzureOpenAIConfigError
from airflow_provider_aoai.http.policy import Failure, body_limit

STREAM_CHUNK = 1024 * 1024
# Compressed answers are decoded in steps this large: what one step decodes stays bounded.
DECODE_STEP = 64 * 1024
_MAX_INTERIM_HEADER_LINES = 100
_MAX_LINE = 65536


class TransportError(Exception):
    """No answer: ``failure`` says why, and whether the service may have seen the request."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.reason)
        self.failure = failure


class AbortedWhileOpening(OSError):
    """The transport was aborted (the task is being killed) while a connection opened: nothing was sent."""


@dataclass
class Answer:
    """An answer read whole: a success at most ``ANSWER_LIMIT`` bytes, an error at most
    ``ERROR_BODY_LIMIT`` (``truncated`` when there was more; then only the error limit's worth is kept)."""

    status_code: int
    reason: str
    headers: Mapping[str, str]  # case-insensitive
    content: bytes
    truncated: bool = False
    stream: Any = None  # with ``stream=True``, a success's body unread (see Transport.chunks)

    def json(self) -> Any:
        """:raises ValueError: the body is not JSON."""
        import json

        try:
            return json.loads(self.content)
        except RecursionError as exc:
            raise ValueError("the body is not JSON: nested too deeply") from exc

    def close(self) -> None:
        """Nothing to release: the answer was read whole and its connection given back."""


class InFlight:
    """The connections checked out right now, so that :meth:`abort` can shut their sockets."""

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


class _FinalAnswer(HTTPConnection.response_class):  # type: ignore[misc,valid-type]
    """The response class of urllib3's connections, reading past every interim (1xx) answer."""

    def _read_status(self) -> tuple[str, int, str]:
        while True:
            version, status, reason = super()._read_status()
            if not 100 <= status < 200:
                return version, status, reason
            for _ in range(_MAX_INTERIM_HEADER_LINES):  # the interim answer's header lines
                if self.fp.readline(_MAX_LINE + 1) in (b"\r\n", b"\n", b""):
                    break
            else:
                raise ValueError("an interim answer with more header lines than HTTP allows")


class _Tracked:
    """Mixed into urllib3's connection classes: interim answers skipped, nothing sent after an abort."""

    response_class: type[Any] = _FinalAnswer
    in_flight: InFlight | None = None

    def connect(self) -> None:
        aborts = self.in_flight.aborts if self.in_flight is not None else 0
        super().connect()  # type: ignore[misc]
        if self.in_flight is not None and self.in_flight.aborts != aborts:
            cast(HTTPConnection, self).close()
            raise AbortedWhileOpening("aborted while the connection opened")


class _Connection(_Tracked, HTTPConnection):
    pass


class _TLSConnection(_Tracked, HTTPSConnection):
    pass


def _pool_classes(in_flight: InFlight, *, fresh: bool) -> dict[str, type[HTTPConnectionPool]]:
    """Pool classes whose connections are tracked in ``in_flight``; with ``fresh`` every request gets a
    connection opened for it, closed once its answer is read."""

    def pool_class(base: type[HTTPConnectionPool], connection: type[HTTPConnection]) -> type:
        class Pool(base):  # type: ignore[valid-type,misc]
            ConnectionCls = connection

            def _new_conn(self) -> Any:
                conn = super()._new_conn()
                conn.in_flight = in_flight
                return conn

            def _get_conn(self, timeout: float | None = None) -> Any:
                conn = self._new_conn() if fresh else super()._get_conn(timeout)
                in_flight.add(conn)
                return conn

            def _put_conn(self, conn: Any) -> None:
                if conn is not None:
                    in_flight.discard(conn)
                if fresh:
                    if conn is not None:
                        conn.close()
                    return
                super()._put_conn(conn)

        return Pool

    return {
        "http": pool_class(HTTPConnectionPool, _Connection),
        "https": pool_class(HTTPSConnectionPool, _TLSConnection),
    }


class _Adapter(HTTPAdapter):
    """requests' adapter with our pool classes, direct and through HTTP(S) proxies."""

    def __init__(self, pool_classes: dict[str, type[HTTPConnectionPool]], pool_size: int) -> None:
        self._pool_classes = pool_classes
        super().__init__(pool_connections=1, pool_maxsize=pool_size, max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = self._pool_classes

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):  # SOCKS proxies keep their own pool classes
            manager.pool_classes_by_scheme = self._pool_classes
        return manager


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and everything it wraps (urllib3 nests the real cause several levels deep)."""
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


def failure_of(exc: BaseException, timeout: float) -> Failure:
    """Why a request got no answer, in words, and whether the service may have seen it."""
    chain = list(_chain(exc))

    def has(*kinds: type[BaseException]) -> bool:
        return any(isinstance(e, kinds) for e in chain)

    exceptions = urllib3.exceptions
    never_sent = has(
        exceptions.NewConnectionError,
        exceptions.ConnectTimeoutError,
        exceptions.ClosedPoolError,  # the transport was closed before a connection was taken
        AbortedWhileOpening,
        ConnectionRefusedError,
        socket.gaierror,
    )
    if has(AbortedWhileOpening):
        reason = "aborted while the connection opened (the task is being killed); nothing was sent"
    elif has(socket.gaierror, getattr(exceptions, "NameResolutionError", socket.gaierror)):
        reason = "the host name could not be resolved"
    elif has(ConnectionRefusedError):
        reason = "the connection was refused (nothing listens on that host and port)"
    elif verify := next((e for e in chain if isinstance(e, ssl.SSLCertVerificationError)), None):
        reason = f"TLS failed: {verify.verify_message or 'certificate verification failed'}"
    elif has(ssl.SSLError, exceptions.SSLError):
        reason = "TLS failed (the TLS handshake did not complete)"
    elif has(TimeoutError, socket.timeout, exceptions.TimeoutError):
        reason = f"no answer within {timeout:g}s (timed out)"
    elif has(ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
        reason = "the connection was closed by the other side"
    elif has(ValueError):  # a negative chunk size, say
        reason = "the answer's framing is not valid HTTP"
    elif has(exceptions.ProtocolError, exceptions.ProxyError):
        reason = "the connection was closed before an answer arrived"
    else:
        reason = type(exc).__name__
    return Failure(reason, never_sent=never_sent, tls=has(ssl.SSLError, exceptions.SSLError))


class Transport:
    """Pooled, thread-safe HTTP to the one host of ``base_url``.

    :param pool_size: connections kept open for reuse (as many as parts may be sent in parallel).
    :raises AzureOpenAIConfigError: the CA bundle (``REQUESTS_CA_BUNDLE``) cannot be read.
    """

    def __init__(self, base_url: str, pool_size: int) -> None:
        parts = urlsplit(base_url)
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.in_flight = InFlight()
        # Read once for the one host: requests would walk os.environ (and ~/.netrc) on every request.
        self._proxies = requests.utils.get_environ_proxies(base_url)
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        self._verify: bool | str = bundle or True
        if parts.scheme == "https":
            _check_ca_bundle(bundle or requests.utils.DEFAULT_CA_BUNDLE_PATH)
        self._adapters = {
            fresh: _Adapter(_pool_classes(self.in_flight, fresh=fresh), pool_size) for fresh in (False, True)
        }
        try:
            self._request = requests.Request("GET", base_url).prepare()
        except (requests.RequestException, urllib3.exceptions.HTTPError, ValueError):
            raise AzureOpenAIConfigError(f"{self.origin} cannot be requested: the URL is invalid") from None
        # Through a plain-http proxy, requests are sent in absolute form; otherwise in origin form.
        self._absolute = self._adapters[False].request_url(self._request, self._proxies).startswith("http")
        self._pools: dict[bool, HTTPConnectionPool] = {}
        self._lock = threading.Lock()

    @property
    def proxied(self) -> bool:
        return bool(self._proxies)

    def _pool(self, fresh: bool) -> HTTPConnectionPool:
        pool = self._pools.get(fresh)
        if pool is None:
            with self._lock:
                pool = cast(
                    HTTPConnectionPool,
                    self._adapters[fresh].get_connection_with_tls_context(
                        self._request, self._verify, proxies=self._proxies
                    ),
                )
                self._pools[fresh] = pool
        return pool

    def _urlopen(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: Iterable[bytes | memoryview] | bytes | None,
        timeout: float,
        fresh: bool,
    ) -> urllib3.BaseHTTPResponse:
        try:
            return self._pool(fresh).urlopen(
                method,
                self.origin + target if self._absolute else target,
                body=cast(Any, body),
                headers=dict(headers),
                retries=False,
                redirect=False,
                assert_same_host=False,
                timeout=urllib3.Timeout(connect=timeout, read=timeout),
                preload_content=False,
                decode_content=True,
                chunked=False,
            )
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            if isinstance(exc, urllib3.exceptions.LocationValueError):
                raise AzureOpenAIConfigError(
                    f"{self.origin} cannot be requested: the URL is invalid"
                ) from None
            raise TransportError(failure_of(exc, timeout)) from exc

    def answer(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: Iterable[bytes | memoryview] | bytes | None,
        timeout: float,
        *,
        fresh: bool = False,
        stream: bool = False,
    ) -> Answer:
        """Send one request (``target``: path and query) and read its answer whole, within its limit.

        :param fresh: on a connection opened for it (a create), never a kept-alive one.
        :param stream: leave a success's body unread, as :attr:`Answer.stream` (a download); read it with
            :meth:`chunks`, then :meth:`discard` it.
        :raises TransportError: no answer (or one broken off).
        """
        response = self._urlopen(method, target, headers, body, timeout, fresh)
        if stream and response.status < 300:
            return Answer(response.status, response.reason or "", response.headers, b"", stream=response)
        limit = body_limit(response.status)
        step = DECODE_STEP if response.headers.get("content-encoding") else limit + 1
        content = bytearray()
        try:
            while len(content) <= limit:
                chunk = response.read(min(step, limit + 1 - len(content)))
                if not chunk:
                    break
                content += chunk
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            response.close()
            raise TransportError(failure_of(exc, timeout)) from exc
        finally:
            if len(content) > limit:
                response.close()  # never read to its end: the connection is not reused
            response.release_conn()
        truncated = len(content) > limit
        if truncated:
            del content[min(limit, body_limit(400)) :]
        return Answer(response.status, response.reason or "", response.headers, bytes(content), truncated)

    @staticmethod
    def chunks(response: urllib3.BaseHTTPResponse, timeout: float) -> Iterator[bytes]:
        """The decoded body of a streamed answer, in chunks of about 1 MiB.

        :raises TransportError: the body broke off.
        """
        try:
            while chunk := response.read(STREAM_CHUNK):
                yield chunk
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            raise TransportError(failure_of(exc, timeout)) from exc

    @staticmethod
    def discard(response: urllib3.BaseHTTPResponse) -> None:
        """Done with a streamed answer: its connection is given back (closed if the body was not read)."""
        response.close()
        response.release_conn()

    def abort_in_flight(self) -> int:
        """Shut the sockets of every request under way (they fail at once); returns how many were shut."""
        return self.in_flight.abort()

    def close(self) -> None:
        """Close idle connections; requests under way finish, and a later request opens new ones."""
        with self._lock:
            self._pools.clear()
            for adapter in self._adapters.values():
                adapter.close()


def _check_ca_bundle(where: str) -> None:
    """:raises AzureOpenAIConfigError: the CA bundle file or directory cannot be used for TLS."""
    try:
        if os.path.isdir(where):
            ssl.create_default_context(capath=where)
        else:
            ssl.create_default_context(cafile=where)
    except (ssl.SSLError, OSError) as exc:
        reason = exc.strerror or getattr(exc, "reason", None) or type(exc).__name__
        raise AzureOpenAIConfigError(
            f"The CA bundle {where!r} (REQUESTS_CA_BUNDLE, or requests' own) cannot be used: {reason}"
        ) from None
