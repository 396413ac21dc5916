"""A loopback HTTP server that plays back one recording of the live service (``tests/specs/recordings``).

:class:`Replay` serves a recording's exchanges in order. Each request must have the recorded method and path
(the host is ignored, and so is the project's name in ``/api/projects/<name>/``, which the recordings
sanitize), the recorded query parameters (the api-version among them) and, where the recording says one was
sent, the ``api-key`` or ``Authorization`` header. It then gets the recorded status, headers and body:
``Transfer-Encoding`` dropped, ``Content-Length`` set to the bytes sent, and the body gzip-compressed where
the recorded headers say ``Content-Encoding: gzip`` (the recordings hold bodies decoded). A JSON body is sent
as JSON; a string body of any other type is the test proxy's base64 of the raw bytes.

Request bodies are read but never compared (a multipart body's boundary differs on every run). A request
that does not match, or comes after the last exchange, answers 599 and is written to
:attr:`Replay.mismatches`, which a test asserts empty, as it asserts :attr:`Replay.remaining` is 0 at the end.

Also here: :func:`load_recording` and :func:`without_truncation_markers`.
"""

from __future__ import annotations

import base64
import copy
import gzip
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

RECORDINGS = Path(__file__).resolve().parent / "specs" / "recordings"
MISMATCH_STATUS = 599
# How the researcher marked items cut out of a long recorded list (a string among the list's objects).
TRUNCATION_MARKER = "...TRUNCATED BY RESEARCHER"
_NOT_REPLAYED = {"transfer-encoding", "content-length", "connection", "keep-alive"}


def load_recording(name: str) -> dict[str, Any]:
    """The recording ``tests/specs/recordings/<name>``: ``{"provenance", "exchanges"}``."""
    document: dict[str, Any] = json.loads((RECORDINGS / name).read_text())
    return document


def without_truncation_markers(recording: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``recording`` whose list answers lose the researcher's truncation markers, so that their
    ``data`` holds only the recorded objects, as the live answer did (the cut items are not known)."""
    trimmed = copy.deepcopy(dict(recording))
    for exchange in trimmed["exchanges"]:
        body = exchange["response"].get("body")
        if isinstance(body, dict) and isinstance(body.get("data"), list):
            body["data"] = [
                item
                for item in body["data"]
                if not (isinstance(item, str) and item.startswith(TRUNCATION_MARKER))
            ]
    return trimmed


@dataclass(frozen=True)
class Seen:
    """One request the replay was asked: its path as sent, header names in lower case."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


def _segments(path: str) -> list[str]:
    return [unquote(segment) for segment in path.split("/")]


def _header(headers: Mapping[str, str], name: str) -> str | None:
    return next((value for key, value in headers.items() if key.lower() == name), None)


def answer_body(response: Mapping[str, Any]) -> bytes:
    """The bytes a recorded answer carried (before any content encoding)."""
    body = response.get("body")
    if body is None:
        return b""
    content_type = _header(response.get("headers", {}), "content-type") or ""
    if isinstance(body, str) and "json" not in content_type:
        return base64.b64decode(body)  # the test proxy records a binary body as base64
    return json.dumps(body, separators=(",", ":")).encode()


@dataclass
class Replay:
    """Play back ``recording`` (as :func:`load_recording` gives it, possibly edited) on 127.0.0.1.

    Use it as a context manager; :attr:`url` is its base URL.
    """

    recording: Mapping[str, Any]
    requests: list[Seen] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    served: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def exchanges(self) -> list[dict[str, Any]]:
        return list(self.recording["exchanges"])

    @property
    def remaining(self) -> int:
        """Recorded exchanges nobody asked for yet."""
        return len(self.exchanges) - self.served

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the replay is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> Replay:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.replay = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, name="replay", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    # ---------------------------------------------------------------- matching
    def next_answer(self, seen: Seen) -> tuple[int, list[tuple[str, str]], bytes]:
        """The answer to ``seen``: the next exchange's, or a 599 when ``seen`` is not what was recorded."""
        with self._lock:
            self.requests.append(seen)
            if self.served >= len(self.exchanges):
                return self._mismatch(f"{seen.method} {seen.path}: every recorded exchange was served")
            exchange = self.exchanges[self.served]
            problem = _difference(exchange["request"], seen)
            if problem is not None:
                return self._mismatch(f"exchange {self.served}: {problem}")
            self.served += 1
        response = exchange["response"]
        body = answer_body(response)
        headers = [
            (name, str(value))
            for name, value in response.get("headers", {}).items()
            if name.lower() not in _NOT_REPLAYED
        ]
        if (_header(response.get("headers", {}), "content-encoding") or "").lower() == "gzip":
            body = gzip.compress(body)
        headers.append(("Content-Length", str(len(body))))
        return int(response["status"]), headers, body

    def _mismatch(self, problem: str) -> tuple[int, list[tuple[str, str]], bytes]:
        self.mismatches.append(problem)
        body = json.dumps({"error": {"code": "replayMismatch", "message": problem}}).encode()
        return (
            MISMATCH_STATUS,
            [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
            body,
        )


def _difference(recorded: Mapping[str, Any], seen: Seen) -> str | None:
    """Why ``seen`` is not the ``recorded`` request, or ``None`` when it is."""
    uri = urlsplit(recorded["uri"])
    if seen.method != recorded["method"]:
        return f"expected {recorded['method']} {uri.path}, got {seen.method} {seen.path}"
    expected, actual = _segments(uri.path), _segments(seen.path)
    if expected[1:3] == ["api", "projects"] and len(expected) > 3 and len(actual) > 3:
        actual = [*actual[:3], expected[3], *actual[4:]]  # any project name
    if expected != actual:
        return f"expected the path {uri.path}, got {seen.path}"
    wanted = parse_qs(uri.query, keep_blank_values=True)
    if wanted != seen.query:
        return f"{seen.method} {seen.path}: expected the query {wanted}, got {seen.query}"
    flags = recorded.get("headers", {})
    if flags.get("api-key present") and "api-key" not in seen.headers:
        return f"{seen.method} {seen.path}: the recorded request had an api-key header"
    if flags.get("authorization present") and "authorization" not in seen.headers:
        return f"{seen.method} {seen.path}: the recorded request had an Authorization header"
    return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's pool expects

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _handle(self) -> None:
        body = self._read_body()
        parts = urlsplit(self.path)
        seen = Seen(
            method=self.command,
            path=parts.path,
            query=parse_qs(parts.query, keep_blank_values=True),
            headers={name.lower(): value for name, value in self.headers.items()},
            body=body,
        )
        replay: Replay = self.server.replay  # type: ignore[attr-defined]
        status, headers, content = replay.next_answer(seen)
        self.send_response_only(status)  # no Server or Date of ours beside the recorded ones
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(content)

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _handle

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: what was asked is in :attr:`Replay.requests`."""
