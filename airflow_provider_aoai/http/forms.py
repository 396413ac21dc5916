"""A streamed ``multipart/form-data`` body of known length: how a file or a part is sent."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterable, Iterator

from urllib3.fields import format_multipart_header_param as _param  # HTML5 escaping, as requests does

from airflow_provider_aoai.exceptions import AzureOpenAIError, AzureOpenAIStoppedError

# A file field's content: a callable returning a fresh iterator of its bytes for every attempt.
PartContent = Callable[[], Iterable[bytes | memoryview]]


class MultipartBody:
    """Form text fields first, then one file field whose bytes come from ``content()``: a callable that
    returns a fresh iterator of exactly ``size`` bytes for every attempt (so a retried request sends the body
    again). It is sent with its ``Content-Length``.

    ``on_bytes(n)`` is told of every chunk handed to the socket, and of ``-n`` when an attempt starts over. A
    set ``stop`` event ends the body between chunks with :class:`AzureOpenAIStoppedError`; an exception from
    ``content()`` (a source that changed) ends it the same way, before the closing boundary, so the service
    never receives a complete body.
    """

    def __init__(
        self,
        *,
        fields: dict[str, str],
        file_field: str,
        filename: str,
        size: int,
        content: PartContent,
        content_type: str = "application/octet-stream",
        on_bytes: Callable[[int], None] | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.boundary = "aoai" + secrets.token_hex(16)
        head = "".join(
            f"--{self.boundary}\r\nContent-Disposition: form-data; {_param('name', name)}\r\n\r\n{value}\r\n"
            for name, value in fields.items()
        )
        head += (
            f"--{self.boundary}\r\nContent-Disposition: form-data; {_param('name', file_field)}; "
            f"{_param('filename', filename)}\r\nContent-Type: {content_type}\r\n\r\n"
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
