"""The only code that speaks HTTP: URLs per surface, auth headers, api-version, retries, error mapping.

Retry policy
    * 408, 429, 500, 502, 503, 504 and connection errors are retried, at most ``max_retries`` times, with
      exponential backoff and full jitter, honouring ``retry-after-ms`` and ``Retry-After`` (seconds or an
      HTTP date); any other 4xx is final.
    * A request that creates something (a file, an upload, a completed upload) is retried only where the
      service cannot have acted on it: 408/429 answers and connections that never opened. A 5xx or a
      connection dropped mid-request may have created the file, so it is raised, never repeated: a retry
      must not leave a duplicate behind.
"""

from __future__ import annotations

import email.utils
import enum
import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from airflow_provider_aoai.exceptions import (
    AzureOpenAIAPIError,
    AzureOpenAIConfigError,
    AzureOpenAIConnectionError,
    api_error_class,
)
from airflow_provider_aoai.models import Surface
from airflow_provider_aoai.urls import is_loopback

log = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# Answers that prove the service did not act on the request.
NOT_ACTED_STATUSES = frozenset({408, 429})
DATA_PLANE_API_VERSION = "2024-10-21"
FOUNDRY_API_VERSION = "v1"
REQUEST_ID_HEADERS = ("apim-request-id", "x-request-id", "x-ms-request-id")
STREAM_CHUNK = 1024 * 1024


class Retry(enum.Enum):
    """How far a request may be repeated."""

    SAFE = "safe"  # reads, deletes, cancels, parts: repeating is harmless
    CREATE = "create"  # creates an object: repeat only what the service cannot have acted on


def normalize_endpoint(endpoint: str, api_version: str | None) -> tuple[str, Surface]:
    """Split a connection host into the base URL and the surface it addresses.

    :raises AzureOpenAIConfigError: not an http(s) URL, or plain http to a non-loopback host.
    """
    endpoint = endpoint.strip().rstrip("/")
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AzureOpenAIConfigError(f"endpoint {endpoint!r} is not an http(s) URL")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise AzureOpenAIConfigError(
            f"endpoint {endpoint!r} uses plain http; only https is allowed (http only for loopback emulators)"
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise AzureOpenAIConfigError("the endpoint must not carry a query, fragment or credentials")
    path = parts.path
    if "/api/projects/" in f"{path}/":
        return endpoint, Surface.FOUNDRY
    base = f"{parts.scheme}://{parts.netloc}"
    if path.endswith("/openai/v1") or api_version in ("v1", "preview"):
        return base + path.removesuffix("/openai/v1"), Surface.V1
    return base + path.removesuffix("/openai"), Surface.DATA_PLANE


def parse_retry_after(headers: Any) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or HTTP date), if given."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(float(value) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def _never_sent(exc: requests.RequestException) -> bool:
    """True when the connection never opened, so the service cannot have seen the request."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    import urllib3.exceptions

    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError))


def error_from_response(response: requests.Response) -> AzureOpenAIAPIError:
    """Map an error response of any surface (ErrorResponse, AzureErrorResponse, AgentV1Error) to an exception."""
    code = message = target = None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error") if isinstance(body.get("error"), dict) else body
        code = error.get("code")
        message = error.get("message")
        target = error.get("target") or error.get("param")
    if code is not None:
        code = str(code)
    if not message:
        message = response.reason or "no error message in the response"
    request_id = next((response.headers[h] for h in REQUEST_ID_HEADERS if h in response.headers), None)
    return api_error_class(response.status_code)(
        response.status_code, code, str(message), target=target, request_id=request_id
    )


class MultipartBody:
    """A streamed multipart/form-data body with a known length: requests sends it with Content-Length.

    The form text fields come first, then one file field read in chunks from ``opener()`` (a fresh reader
    for every iteration, so a retried request sends the body again) or from an in-memory buffer, sliced
    without copying. ``on_bytes(n)`` is told of every chunk handed to the socket, and of ``-n`` when an
    attempt starts over.
    """

    def __init__(
        self,
        *,
        fields: dict[str, str],
        file_field: str,
        filename: str,
        size: int,
        content_type: str = "application/octet-stream",
        opener: Callable[[], IO[bytes]] | None = None,
        data: bytes | memoryview | None = None,
        on_bytes: Callable[[int], None] | None = None,
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
        self._opener = opener
        self._data = memoryview(data) if data is not None else None
        self._on_bytes = on_bytes
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

    def _chunks(self) -> Iterator[bytes | memoryview]:
        if self._data is not None:
            for start in range(0, len(self._data), STREAM_CHUNK):
                yield self._data[start : start + STREAM_CHUNK]
            return
        assert self._opener is not None
        reader = self._opener()
        remaining = self.size
        try:
            while remaining > 0:
                chunk = reader.read(min(STREAM_CHUNK, remaining))
                if not chunk:
                    raise OSError(
                        f"the source ended {remaining} bytes early; was it changed during the upload?"
                    )
                remaining -= len(chunk)
                yield chunk
        finally:
            reader.close()

    def __iter__(self) -> Iterator[bytes | memoryview]:
        if self._sent:
            self._report(-self._sent)  # a retry starts over
        yield self._head
        for chunk in self._chunks():
            yield chunk
            self._report(len(chunk))
        yield self._tail


class AzureOpenAIClient:
    """A pooled, thread-safe HTTP client for one endpoint and surface.

    :param endpoint: resource endpoint or Foundry project endpoint (see :func:`normalize_endpoint`).
    :param auth: an object whose ``headers()`` gives the auth headers (see ``credentials``).
    :param api_version: data plane api-version (default ``2024-10-21``); ``v1``/``preview`` select v1.
    :param timeout: seconds to wait for the service to answer (connect and each read).
    :param max_retries: how many times a retryable failure is repeated.
    :param backoff_seconds: first backoff; doubles each retry, with jitter, capped at ``max_backoff_seconds``.
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
        max_backoff_seconds: float = 60.0,
        pool_size: int = 16,
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
        if max_retries < 0:
            raise AzureOpenAIConfigError("max_retries must be 0 or more")
        if timeout <= 0:
            raise AzureOpenAIConfigError("timeout must be positive")
        self.auth = auth
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.session = requests.Session()
        self.session.trust_env = True  # proxies and REQUESTS_CA_BUNDLE from the environment
        adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)

    def url(self, path: str) -> str:
        prefix = {Surface.DATA_PLANE: "/openai", Surface.V1: "/openai/v1", Surface.FOUNDRY: ""}[self.surface]
        return f"{self.base_url}{prefix}/{path}"

    def close(self) -> None:
        self.session.close()

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
        path: str,
        *,
        retry: Retry = Retry.SAFE,
        params: dict[str, Any] | None = None,
        json: Any = None,
        body: MultipartBody | Iterable[bytes] | None = None,
        content_type: str | None = None,
        stream: bool = False,
    ) -> requests.Response:
        """Send one logical request, retrying per the policy above; return a successful response.

        :raises AzureOpenAIAPIError: (a subclass per status) when the service answers an error.
        :raises AzureOpenAIConnectionError: when the service cannot be reached.
        """
        url = self.url(path)
        query = dict(params or {})
        if self.api_version:
            query["api-version"] = self.api_version
        attempt = 0
        while True:
            headers = {"Accept": "application/json", **self.auth.headers()}
            if content_type:
                headers["Content-Type"] = content_type
            elif isinstance(body, MultipartBody):
                headers["Content-Type"] = body.content_type
            response: requests.Response | None = None
            try:
                response = self.session.request(
                    method,
                    url,
                    params=query,
                    json=json,
                    data=body,
                    headers=headers,
                    timeout=self.timeout,
                    stream=stream,
                )
            except requests.RequestException as exc:
                # A certificate that fails verification will fail again: never retried.
                retryable = not isinstance(exc, requests.exceptions.SSLError) and (
                    retry is Retry.SAFE or _never_sent(exc)
                )
                reason = f"{type(exc).__name__}"
                if not retryable or attempt >= self.max_retries:
                    raise AzureOpenAIConnectionError(
                        f"{method} {path} failed: {reason} (after {attempt + 1} attempt(s))"
                        + (
                            ""
                            if retryable or isinstance(exc, requests.exceptions.SSLError)
                            else "; not retried because the service may have acted on it"
                        )
                    ) from None
            else:
                if response.status_code < 400:
                    return response
                retryable = response.status_code in (
                    RETRYABLE_STATUSES if retry is Retry.SAFE else NOT_ACTED_STATUSES
                )
                if not retryable or attempt >= self.max_retries:
                    error = error_from_response(response)
                    response.close()
                    raise error
                reason = f"HTTP {response.status_code}"
            delay = self._backoff(attempt, response)
            if response is not None:
                response.close()
            attempt += 1
            log.warning(
                "%s %s: %s; retry %d of %d in %.2fs", method, path, reason, attempt, self.max_retries, delay
            )
            time.sleep(delay)

    def download(self, path: str, out: IO[bytes]) -> int:
        """Stream the body of ``GET path`` into ``out`` in 1 MiB chunks; return the byte count."""
        response = self.request("GET", path, stream=True)
        size = 0
        try:
            for chunk in response.iter_content(STREAM_CHUNK):
                out.write(chunk)
                size += len(chunk)
        finally:
            response.close()
        return size

    def request_json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        try:
            return response.json()
        finally:
            response.close()
