"""A hostile HTTP service for the misbehaving-service attacks: what tests/misbehaving.py cannot do (answers
that trickle, never end, or end in a chunked body of any size). Real sockets, no mocks."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Behaviour = Callable[[BaseHTTPRequestHandler], None]


def trickle(body: bytes, every: float, status: int = 200) -> Behaviour:
    """Headers at once, then one byte of ``body`` every ``every`` seconds (a slowloris answer)."""

    def serve(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        for byte in body:
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()
            time.sleep(every)

    return serve


def endless(status: int = 500, chunk: bytes = b"x" * 65536, limit: int | None = None) -> Behaviour:
    """A chunked body that never ends (or ends after ``limit`` bytes), starting like a JSON error."""

    def serve(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        sent = 0
        handler.server.sent = 0  # type: ignore[attr-defined]
        first = b'{"error": {"code": "boom", "message": "'
        try:
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(first), first))
            while limit is None or sent < limit:
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
                handler.server.sent = sent  # type: ignore[attr-defined]
            tail = b'"}}'
            handler.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(tail), tail))
        except (BrokenPipeError, ConnectionResetError):
            pass

    return serve


class HostileService:
    """``with HostileService(behaviour) as service: service.url``; ``service.requests`` counts requests."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                outer.requests += 1
                outer.behaviour(self)

            do_GET = do_POST = do_DELETE = _serve

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def body_bytes_sent(self) -> int:
        """How much of an endless body the client took before it hung up."""
        return getattr(self._server, "sent", 0)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> HostileService:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def json_answer(status: str, payload: dict) -> bytes:
    """A whole HTTP/1.1 answer with a JSON body, kept alive (no ``Connection: close``)."""
    body = json.dumps(payload).encode()
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


class RawService:
    """A TCP service below HTTP: ``handler(connection, service)`` serves each accepted connection with raw
    bytes (1xx answers, bad chunk sizes, answers before the request body is read). ``service.connections``
    counts the connections accepted, ``service.request_lines`` the request lines read by :func:`read_head`."""

    def __init__(self, handler: Callable[[socket.socket, RawService], None]) -> None:
        self.handler = handler
        self.connections = 0
        self.request_lines: list[bytes] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def read_head(self, connection: socket.socket) -> bytes | None:
        """One request's head (what follows it is left unread); None when the client closed the connection."""
        head = b""
        while b"\r\n\r\n" not in head:
            data = connection.recv(65536)
            if not data:
                return None
            head += data
        self.request_lines.append(head.split(b"\r\n", 1)[0])
        return head

    def read_request(self, connection: socket.socket) -> bytes | None:
        """One request's head, its body (by Content-Length) read and dropped; None as for :meth:`read_head`."""
        head = self.read_head(connection)
        if head is None:
            return None
        fields = (line.split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line)
        length = next((int(value) for name, value in fields if name.strip().lower() == b"content-length"), 0)
        body = head.split(b"\r\n\r\n", 1)[1]
        while len(body) < length:
            data = connection.recv(65536)
            if not data:
                return None
            body += data
        return head

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with connection, contextlib.suppress(OSError):
            self.handler(connection, self)

    def __enter__(self) -> RawService:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._listener.close()
