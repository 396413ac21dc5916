"""Per-resource request rates, as the service enforces them: a token bucket per class of operation.

The emulator is one resource: every surface (data plane, v1, a Foundry project's agents and OpenAI routes)
and every project draws from the same buckets. Three classes:

* ``creates``: requests that create something: ``POST files`` (upload), ``POST files/import``,
  ``POST uploads``, ``POST uploads/{id}/complete``;
* ``parts``: ``POST uploads/{id}/parts``;
* ``reads``: every other operation of the service (reads, lists, downloads, deletes, cancels).

The ``/_emulator/*`` control endpoints and the token issuers are not operations of the service and are never
throttled. A bucket holds one second's worth of requests (at least one) and refills continuously; a rate of
0 means no limit. A request is judged after its api-version and its credentials were checked (an
unauthenticated request costs nothing), before its handler runs: a throttled request has no effect (its body
is read and dropped, so that the client reads the 429 rather than a reset connection).

The 429 is the service's, as users reported it (no recording of ours shows one): on the data plane
``{"error": {"code": "429", "message": "Requests to the <operationId> Operation under Azure OpenAI API version
<api-version> have exceeded call rate limit of your current OpenAI S0 pricing tier. Please retry after N
second(s). Please go here: https://aka.ms/oai/quotaincrease if you would like to further increase the default
rate limit."}}``. Sources: the body ``{'error': {'code': '429', 'message': 'Requests to the
ChatCompletions_Create Operation under Azure OpenAI API version 2023-05-15 have exceeded ... Please retry
after 86400 seconds. ...'}}`` (jasonacox/TinyLLM#17); ``{"error":{"code":"429","message": ...}}`` with an
``apim-request-id`` header (microsoft/copilot-camp#551); the call-rate wording "... have exceeded call rate
limit of your current OpenAI S0 pricing tier. Please retry after 3 seconds. Please go here:
https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit."
(microsoft/action-python#12) and "Please retry after 1 second." (a FastGPT troubleshooting note). The
operation is named by its operationId, as ``ChatCompletions_Create`` and ``Embeddings_Create`` are: here the
authoring spec's (:data:`OPERATION_IDS`). The other surfaces answer the same code and message in the error
shape they use for every other error (:func:`~airflow_provider_aoai.emulator.errors.error_response`; our
decision, no report shows theirs). Headers: ``Retry-After`` (whole seconds, rounded up, at least 1) and
``retry-after-ms`` (milliseconds until this class has a token again); the request ids are added by the
outermost layer, as on every answer.

Only the standard library is imported here at import time: :class:`~airflow_provider_aoai.emulator.Emulator`
holds a :class:`Throttler` from the start, and the command line reads the defaults before it checks that the
emulator's extra is installed.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.responses import JSONResponse

    from airflow_provider_aoai.models import Surface

# "Maximum file upload requests per resource | 30 requests per second": Azure OpenAI quotas and limits
# (MicrosoftDocs/azure-ai-docs, articles/ai-foundry/openai/quotas-limits.md;
# https://learn.microsoft.com/en-us/azure/ai-foundry/openai/quotas-limits).
FILE_UPLOAD_REQUESTS_PER_SECOND = 30.0
# Creates follow that figure. Parts follow it too: a part is a "file upload request" as the documented limit
# counts them (our reading; the page names no separate figure for parts).
DEFAULT_CREATES_PER_SECOND = FILE_UPLOAD_REQUESTS_PER_SECOND
DEFAULT_PARTS_PER_SECOND = FILE_UPLOAD_REQUESTS_PER_SECOND
# Reads, lists, downloads, deletes: no documented figure, so no limit by default.
DEFAULT_READS_PER_SECOND = 0.0

CLASSES = ("creates", "parts", "reads")
CREATES = frozenset({"files.create", "files.import", "uploads.create", "uploads.complete"})
PARTS = frozenset({"uploads.parts"})

# Each operation's operationId in the data plane's authoring spec (2024-10-21), as the service's 429 names it.
OPERATION_IDS = {
    "files.create": "Files_Upload",
    "files.import": "Files_Import",
    "files.list": "Files_List",
    "files.get": "Files_Get",
    "files.delete": "Files_Delete",
    "files.content": "Files_GetContent",
    "uploads.create": "UploadFile_Start",
    "uploads.parts": "UploadFile_Part",
    "uploads.complete": "UploadFile_Complete",
    "uploads.cancel": "UploadFile_Cancel",
}

# The longest wait a 429 names (a rate of 1e-300 a second would name an endless one).
MAX_WAIT_SECONDS = 10.0**9

# Sent by the throttle on its 429; the outermost layer marks the request log entry and never sends it.
THROTTLED_MARK = "x-aoai-emulator-throttled"


def class_of(operation: str) -> str:
    """The class of a service operation: ``creates``, ``parts`` or ``reads``."""
    if operation in CREATES:
        return "creates"
    if operation in PARTS:
        return "parts"
    return "reads"


def check_rate(name: str, value: object) -> float:
    """``value`` as a rate in requests per second (0: no limit).

    :raises ValueError: not a finite number of at least 0.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        raise ValueError(f"{name} must be a number of requests per second, at least 0 (0: no limit)")
    return float(value)


@dataclass
class Throttle:
    """Requests per second per class of operation, for the whole resource (0: no limit); the service's by
    default. Tests that create files quickly turn it off: ``Throttle.off()``."""

    creates: float = DEFAULT_CREATES_PER_SECOND
    parts: float = DEFAULT_PARTS_PER_SECOND
    reads: float = DEFAULT_READS_PER_SECOND

    def __post_init__(self) -> None:
        for name in CLASSES:
            setattr(self, name, check_rate(name, getattr(self, name)))

    @classmethod
    def off(cls) -> Throttle:
        """No limit on any class."""
        return cls(creates=0, parts=0, reads=0)


class _Bucket:
    """A token bucket: ``rate`` tokens a second, continuously, up to one second's worth (at least one)."""

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.tokens = self.capacity
        self.stamp = now
        self.allowed = 0
        self.throttled = 0

    @property
    def capacity(self) -> float:
        return max(1.0, self.rate)

    def _refill(self, now: float) -> None:
        if self.rate:
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self, now: float) -> float | None:
        """Take a token: ``None`` when there was one, else the seconds until there is one."""
        if not self.rate:
            self.allowed += 1
            return None
        self._refill(now)
        if self.tokens >= 1.0 - 1e-9:
            self.tokens = max(self.tokens - 1.0, 0.0)
            self.allowed += 1
            return None
        self.throttled += 1
        return (1.0 - self.tokens) / self.rate

    def set_rate(self, rate: float, now: float) -> None:
        """Change the rate: the tokens earned so far are kept, up to the new capacity; a bucket that had no
        limit starts full."""
        unlimited = not self.rate
        self._refill(now)
        self.rate = rate
        self.tokens = self.capacity if unlimited else min(self.tokens, self.capacity)


class Throttler:
    """The resource's buckets, one per class; thread-safe (tests change rates while the server serves).

    :param throttle: the rates the emulator starts with; :meth:`reset` goes back to them.
    :param clock: seconds, monotonic (tests may pass their own).
    """

    def __init__(self, throttle: Throttle | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.configured = replace(throttle) if throttle is not None else Throttle()  # a checked copy
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets = self._fresh()

    def _fresh(self) -> dict[str, _Bucket]:
        now = self._clock()
        return {name: _Bucket(getattr(self.configured, name), now) for name in CLASSES}

    def admit(self, operation: str) -> float | None:
        """Count a request of ``operation``: ``None`` if it may proceed, else the seconds until its class
        has a token again (the request is throttled)."""
        with self._lock:
            return self._buckets[class_of(operation)].take(self._clock())

    def set_rates(self, **rates: object) -> None:
        """Change some classes' rates at run time (``creates=``, ``parts=``, ``reads=``; 0: no limit).

        :raises ValueError: an unknown class, or a rate that is not a number of at least 0 (nothing changes).
        """
        unknown = sorted(set(rates) - set(CLASSES))
        if unknown:
            raise ValueError(f"unknown classes {', '.join(unknown)}; expected {', '.join(CLASSES)}")
        checked = {name: check_rate(name, value) for name, value in rates.items()}
        with self._lock:
            now = self._clock()
            for name, rate in checked.items():
                self._buckets[name].set_rate(rate, now)

    def reset(self) -> None:
        """Back to the configured rates, with full buckets and no counts."""
        with self._lock:
            self._buckets = self._fresh()

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Per class: ``rate`` (requests per second, 0: no limit), ``allowed`` and ``throttled`` since the
        last reset."""
        with self._lock:
            return {
                name: {"rate": bucket.rate, "allowed": bucket.allowed, "throttled": bucket.throttled}
                for name, bucket in self._buckets.items()
            }


def retry_after_headers(wait: float) -> dict[str, str]:
    """``Retry-After`` (whole seconds, rounded up, at least 1) and ``retry-after-ms`` (at least 1)."""
    milliseconds = max(1, math.ceil(min(wait, MAX_WAIT_SECONDS) * 1000))
    return {"Retry-After": str(max(1, math.ceil(milliseconds / 1000))), "retry-after-ms": str(milliseconds)}


def throttled_message(operation: str, api_version: str | None, seconds: int) -> str:
    """The service's message for a throttled request (see the module's docstring for its source)."""
    name = OPERATION_IDS.get(operation, operation)
    unit = "second" if seconds == 1 else "seconds"
    return (
        f"Requests to the {name} Operation under Azure OpenAI API version {api_version or 'v1'} have "
        "exceeded call rate limit of your current OpenAI S0 pricing tier. "
        f"Please retry after {seconds} {unit}. Please go here: https://aka.ms/oai/quotaincrease "
        "if you would like to further increase the default rate limit."
    )


def throttled_response(
    surface: Surface, operation: str, api_version: str | None, wait: float
) -> JSONResponse:
    """The 429 of a request throttled for ``wait`` seconds, in the surface's error shape."""
    from airflow_provider_aoai.emulator.errors import StoreError, error_response

    headers = retry_after_headers(wait)
    seconds = int(headers["Retry-After"])
    response = error_response(
        surface, StoreError(429, "429", throttled_message(operation, api_version, seconds))
    )
    response.headers.update(headers)
    response.headers[THROTTLED_MARK] = "1"
    return response
