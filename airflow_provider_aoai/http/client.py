"""AzureOpenAIClient: one endpoint's requests, each sent, retried and judged as the policy says.

The loop lives here; what it decides lives in :mod:`~airflow_provider_aoai.http.policy` (retries, backoff,
error mapping, answer checks) and how it sends in :mod:`~airflow_provider_aoai.http.transport`. A ``stop``
event ends the retries at once, and :meth:`AzureOpenAIClient.abort_in_flight` shuts the sockets of requests
under way, so a killed task does not wait for them. Every message names the request as ``METHOD path``
(percent-encoded, without the query) and the endpoint's host: never a secret.
"""

from __future__ import annotations

import json as json_module
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlencode, urlsplit

import requests

from airflow_provider_aoai import __version__
from airflow_provider_aoai.exceptions import AzureOpenAIConnectionError, AzureOpenAIStoppedError
from airflow_provider_aoai.http.endpoint import Endpoint, Path, quoted
from airflow_provider_aoai.http.policy import (
    MAX_BACKOFF_SECONDS,
    MAX_RETRY_WAIT_SECONDS,
    Retry,
    answer_object,
    api_error,
    backoff_seconds,
    may_retry_failure,
    may_retry_status,
    parse_retry_after,
    redirected,
    too_large,
)
from airflow_provider_aoai.http.transport import Answer, Transport, TransportError
from airflow_provider_aoai.models import MAX_CONCURRENCY, ObjectKind, Surface

if TYPE_CHECKING:
    from airflow_provider_aoai.http.forms import MultipartBody

log = logging.getLogger(__name__)


class Auth(Protocol):
    """What signs a request (see :mod:`~airflow_provider_aoai.credentials`)."""

    def headers(self) -> dict[str, str]: ...


class Writable(Protocol):
    def write(self, data: bytes, /) -> object: ...


class AzureOpenAIClient:
    """A pooled, thread-safe HTTP client for one endpoint and surface.

    The settings are taken as given: :func:`~airflow_provider_aoai.connection.read_settings` checked them.

    :param endpoint: an :class:`Endpoint`, or a resource or Foundry project endpoint URL (see
        :func:`~airflow_provider_aoai.http.endpoint.normalize_endpoint`).
    :param auth: gives the auth headers of each attempt.
    :param api_version: with an endpoint URL: the api-version (data plane default ``2024-10-21``;
        ``v1``/``preview`` select v1).
    :param timeout: seconds to wait for the service to answer (connect and each read).
    :param max_retries: how many times a retryable failure is repeated.
    :param backoff_seconds: first backoff; doubles each retry, with jitter, capped at ``max_backoff_seconds``.
    :param max_retry_wait: seconds one request may spend waiting between its attempts, in all; a retry that
        would wait past it is not made (so a request throttled without end still ends, and says so).
    :param pool_size: connections kept open for reuse (as many as parts may be sent in parallel).
    """

    def __init__(
        self,
        *,
        endpoint: Endpoint | str,
        auth: Auth,
        api_version: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 5,
        backoff_seconds: float = 0.5,
        max_backoff_seconds: float = MAX_BACKOFF_SECONDS,
        max_retry_wait: float = MAX_RETRY_WAIT_SECONDS,
        pool_size: int = MAX_CONCURRENCY,
    ) -> None:
        self.endpoint = endpoint if isinstance(endpoint, Endpoint) else Endpoint.of(endpoint, api_version)
        self.auth = auth
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.backoff_seconds = float(backoff_seconds)
        self.max_backoff_seconds = max_backoff_seconds
        self.max_retry_wait = float(max_retry_wait)
        self.transport = Transport(self.base_url, pool_size)
        self._path_prefix = urlsplit(self.endpoint.url(())).path  # base path + surface prefix + "/"
        self._headers = {
            "Accept": "application/json",
            "Accept-Encoding": "gzip, deflate",
            "User-Agent": f"airflow-provider-aoai/{__version__} {requests.utils.default_user_agent()}",
        }

    @property
    def base_url(self) -> str:
        return self.endpoint.base_url

    @property
    def surface(self) -> Surface:
        return self.endpoint.surface

    @property
    def api_version(self) -> str | None:
        return self.endpoint.api_version

    @property
    def host(self) -> str:
        """The endpoint's scheme, host and port, for messages."""
        return self.endpoint.host

    def url(self, path: Path) -> str:
        """The URL of ``path``; every segment is percent-encoded with nothing safe (an id is one segment)."""
        return self.endpoint.url(path)

    def close(self) -> None:
        """Close idle connections; requests under way finish, and a later request opens new ones."""
        self.transport.close()

    def abort_in_flight(self) -> int:
        """Shut the sockets of every request under way (they fail at once); returns how many were shut."""
        return self.transport.abort_in_flight()

    def request(self, method: str, path: Path, **kwargs: Any) -> Answer:
        """Send one logical request, retrying per the policy; return the successful answer, read whole.

        :param retry: :class:`Retry.SAFE` (default) or :class:`Retry.CREATE`.
        :param params: query parameters (the api-version is added).
        :param json: a JSON body; or ``body``: a :class:`MultipartBody`.
        :param stop: when set, no further attempt is made and waiting between attempts ends at once.
        :param max_retries: overrides the client's retries for this request (``test_connection`` uses 0).
        :param timeout: overrides the client's timeout for this request.
        :raises AzureOpenAIAPIError: (a subclass per status) when the service answers an error.
        :raises AzureOpenAIConnectionError: when the service cannot be reached.
        :raises AzureOpenAIStoppedError: ``stop`` was set.
        """
        return self._send(method, path, **kwargs)

    def request_object(
        self,
        method: str,
        path: Path,
        *,
        expect: ObjectKind,
        expect_id: str | None = None,
        expect_parent: str | None = None,
        object_hook: Callable[[dict[str, Any]], Any] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """:meth:`request`, then the answer's JSON object, checked to be the ``expect`` kind (and id).

        :param object_hook: :func:`json.loads`'s, called with each object of the answer as it is parsed.
        :raises AzureOpenAIResponseError: the answer is not JSON, not an object, or not what was asked for.
        """
        answer = self._send(method, path, **kwargs)
        what = f"{method} {quoted(path)}"
        return answer_object(
            what,
            answer.status_code,
            answer.headers,
            answer.content,
            expect,
            expect_id,
            expect_parent,
            object_hook,
        )

    def download(
        self, path: Path, open_out: Callable[[], Writable], *, stop: threading.Event | None = None
    ) -> int:
        """Stream the body of ``GET path`` in 1 MiB chunks into ``open_out()``; return the byte count.

        ``open_out`` is called only once the service answered success, so an error answer (a 404) never
        creates or truncates anything.
        """
        answer = self._send("GET", path, stop=stop, stream=True)
        stream = answer.stream
        size = 0
        try:
            out = open_out()
            for chunk in self.transport.chunks(stream, self.timeout):
                if stop is not None and stop.is_set():
                    raise AzureOpenAIStoppedError("the download was stopped (the task is being killed)")
                out.write(chunk)
                size += len(chunk)
        except TransportError as exc:
            raise AzureOpenAIConnectionError(
                f"GET {quoted(path)} from {self.host} broke off after {size} bytes: {exc.failure.reason}"
            ) from None
        finally:
            self.transport.discard(stream)
        return size

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        return backoff_seconds(
            attempt, retry_after, first=self.backoff_seconds, ceiling=self.max_backoff_seconds
        )

    def _over_budget(self, delay: float, waited: float) -> str:
        return (
            f"the next retry was due in {delay:.1f}s, past the connection's max_retry_wait of "
            f"{self.max_retry_wait:g}s ({max(self.max_retry_wait - waited, 0.0):.1f}s left)"
        )

    def _send(
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
    ) -> Answer:
        what = f"{method} {quoted(path)}"
        query = dict(params or {})
        if self.api_version:
            query["api-version"] = self.api_version
        target = self._path_prefix + quoted(path) + (f"?{urlencode(query)}" if query else "")
        retries = self.max_retries if max_retries is None else max_retries
        wait = self.timeout if timeout is None else timeout
        payload: bytes | MultipartBody | None = None
        content_headers: dict[str, str] = {}
        if body is not None:
            payload = body
            content_headers = {"Content-Type": body.content_type, "Content-Length": str(len(body))}
        elif json is not None:
            payload = json_module.dumps(json, allow_nan=False).encode()
            content_headers = {"Content-Type": "application/json"}
        attempt = 0
        waited = 0.0
        while True:
            if stop is not None and stop.is_set():
                raise AzureOpenAIStoppedError(f"{what} stopped: the task is being killed")
            headers = {**self._headers, **self.auth.headers(), **content_headers}
            try:
                answer = self.transport.answer(
                    method, target, headers, payload, wait, fresh=retry is Retry.CREATE, stream=stream
                )
            except TransportError as exc:
                if stop is not None and stop.is_set():
                    raise AzureOpenAIStoppedError(f"{what} stopped: the task is being killed") from None
                failure = exc.failure
                retryable = may_retry_failure(failure, retry)
                delay = self._delay(attempt, None)
                if not retryable or attempt >= retries or waited + delay > self.max_retry_wait:
                    maybe_acted = not retryable and not failure.tls and not failure.never_sent
                    over = retryable and attempt < retries
                    raise AzureOpenAIConnectionError(
                        f"{what} to {self.host} failed: {failure.reason} (after {attempt + 1} attempt(s) "
                        f"and {waited:.1f}s of waiting between them)"
                        + ("; not retried because the service may have acted on it" if maybe_acted else "")
                        + (f"; {self._over_budget(delay, waited)}" if over else "")
                    ) from None
                reason = failure.reason
            else:
                status = answer.status_code
                if status < 300:
                    if answer.truncated:
                        raise too_large(what, status, answer.headers)
                    return answer
                if status < 400:
                    raise redirected(what, status, answer.headers)
                delay = self._delay(attempt, parse_retry_after(answer.headers))
                over = attempt < retries and waited + delay > self.max_retry_wait
                if not may_retry_status(status, retry) or attempt >= retries or over:
                    raise api_error(
                        status,
                        answer.reason,
                        answer.headers,
                        answer.content,
                        truncated=answer.truncated,
                        attempts=attempt + 1,
                        waited=waited,
                        gave_up=self._over_budget(delay, waited)
                        if over and may_retry_status(status, retry)
                        else None,
                    )
                reason = f"HTTP {status}"
            attempt += 1
            waited += delay
            log.warning("%s: %s; retry %d of %d in %.2fs", what, reason, attempt, retries, delay)
            if stop is not None:
                if stop.wait(delay):
                    raise AzureOpenAIStoppedError(f"{what} stopped: the task is being killed")
            else:
                time.sleep(delay)
