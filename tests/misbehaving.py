"""A real HTTP server that answers whatever a test scripts: how the client meets a misbehaving service.

The emulator plays the service faithfully; this one plays it badly (HTML where JSON belongs, a list where a
File belongs, a 10 MB error message, a body that echoes the api key) and records the raw request lines, so
tests can see exactly which path each request addressed.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Answer:
    status: int = 200
    body: bytes = b"{}"
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=lambda: {"apim-request-id": "req-misbehaving-1"})


@dataclass
class Seen:
    method: str
    raw_path: str
    headers: dict[str, str]


class MisbehavingService:
    """``with MisbehavingService() as service: service.answer = Answer(...); service.url``; ``answer`` may
    also be a function of the request's path (with its query) that returns the Answer."""

    def __init__(self) -> None:
        self.answer = Answer()
        self.seen: list[Seen] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                outer.seen.append(Seen(self.command, self.path, dict(self.headers)))
                answer = outer.answer(self.path) if callable(outer.answer) else outer.answer
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.content_type)
                self.send_header("Content-Length", str(len(answer.body)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(answer.body)

            do_GET = do_POST = do_DELETE = do_PUT = _serve

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> MisbehavingService:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
