"""A strict, fast stand-in for the service's Uploads API, for the upload benchmark (run in its own process).

The emulator writes every part to disk and assembles and hashes the file inside ``complete``; on a 2-core
machine that costs as much CPU as the client being measured. This server does the same checks, arranged so
that the server's own work stays out of the timed upload:

* at once, on every request: the api key, the api-version, the route, the JSON bodies; for a part, the
  Content-Type boundary, the Content-Length, the multipart head (one ``data`` field with a filename) and the
  exact closing delimiter; for ``complete``, that every part id belongs to the upload, none twice, and that
  the parts add up to the upload's ``bytes``;
* right after answering ``complete``, in a background thread: the md5 of the parts in ``part_ids`` order
  against the ``md5`` sent, and that no part holds its own multipart delimiter. The file is ``pending``
  until then, and ends ``processed`` or ``error`` (with ``status_details``); the benchmark waits for
  ``processed`` (untimed) after every upload, so a wrong md5 fails the run.

Part bodies are spooled to files under ``--spool`` (best on a tmpfs) until the check, then deleted; with
``--reuse-spool`` a checked part's file is kept and overwritten by a later part instead (no fresh pages for the
server to fault in and zero) until the server exits.
``--bandwidth`` caps each connection's request bodies (bytes/s) and ``--latency`` delays every request, like
the emulator's simulated link. Prints ``listening on http://127.0.0.1:PORT`` once it accepts connections.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

CHUNK = 1024 * 1024
MAX_HEAD = 64 * 1024
MAX_PART = 512 * 1024 * 1024
MAX_UPLOAD = 9 * 1024 * 1024 * 1024
ROUTE = re.compile(r"^/openai/(uploads|files)(?:/([A-Za-z0-9_.-]+))?(?:/(parts|complete|cancel))?$")


class State:
    def __init__(
        self, spool: Path, api_key: str, bandwidth: float | None, latency: float, reuse: bool = False
    ) -> None:
        self.spool = spool
        self.reuse = reuse
        self.api_key = api_key
        self.bandwidth = bandwidth
        self.latency = latency
        self.lock = threading.Lock()
        self.uploads: dict[str, dict[str, Any]] = {}
        self.parts: dict[str, dict[str, Any]] = {}  # id -> {"upload_id", "size", "path", "delimiter"}
        self.files: dict[str, dict[str, Any]] = {}
        self.free: list[Path] = []  # spool files of checked parts, overwritten by later parts

    def spool_file(self) -> Path:
        """A spool file for a new part: a checked part's when there is one, else a new one.

        Overwriting a file's pages costs no new memory. Fresh tmpfs pages cost the server a page fault and
        zeroing each, and on a fresh VM a host page fault too: CPU taken from the client being measured.
        """
        with self.lock:
            if self.free:
                return self.free.pop()
        return self.spool / f"part_{uuid.uuid4().hex}"


class Failure(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "strict-bench"
    state: State

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # ------------------------------------------------------------------ plumbing
    def answer(self, status: int, document: dict[str, Any]) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def content_length(self) -> int:
        text = self.headers.get("Content-Length")
        if text is None or not text.isdigit():
            raise Failure(411, "a Content-Length is required")
        return int(text)

    def read_json(self) -> dict[str, Any]:
        length = self.content_length()
        if length > 1024 * 1024:
            raise Failure(413, "JSON body too large")
        try:
            document = json.loads(self.rfile.read(length))
        except ValueError:
            raise Failure(400, "the body is not JSON") from None
        if not isinstance(document, dict):
            raise Failure(400, "the body must be a JSON object")
        return document

    def handle_any(self) -> None:
        state = self.state
        if state.latency:
            time.sleep(state.latency)
        path, _, query = self.path.partition("?")
        try:
            if self.headers.get("api-key") != state.api_key:
                raise Failure(401, "wrong or missing api-key")
            if "api-version=" not in query:
                raise Failure(404, "no api-version")
            match = ROUTE.match(path)
            if match is None:
                raise Failure(404, f"no route {self.command} {path}")
            kind, object_id, action = match.groups()
            route = (self.command, kind, object_id is not None, action)
            handlers = {
                ("POST", "uploads", False, None): self.create_upload,
                ("POST", "uploads", True, "parts"): self.add_part,
                ("POST", "uploads", True, "complete"): self.complete,
                ("POST", "uploads", True, "cancel"): self.cancel,
                ("GET", "files", True, None): self.get_file,
                ("DELETE", "files", True, None): self.delete_file,
            }
            handler = handlers.get(route)
            if handler is None:
                raise Failure(404, f"no route {self.command} {path}")
            status, document = handler(object_id) if object_id is not None else handler()  # type: ignore[operator]
        except Failure as failure:
            self.close_connection = True  # the body may be unread
            self.answer(failure.status, {"error": {"code": "strictBench", "message": failure.message}})
            return
        self.answer(status, document)

    do_GET = do_POST = do_DELETE = handle_any

    # ------------------------------------------------------------------ uploads
    def create_upload(self) -> tuple[int, dict[str, Any]]:
        document = self.read_json()
        size = document.get("bytes")
        if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= MAX_UPLOAD:
            raise Failure(400, "bytes must be an integer from 1 to 9 GiB")
        for name in ("filename", "purpose", "mime_type"):
            if not isinstance(document.get(name), str) or not document[name]:
                raise Failure(400, f"{name} is required")
        upload = {
            "object": "upload",
            "id": f"upload_{uuid.uuid4().hex}",
            "bytes": size,
            "created_at": int(time.time()),
            "expires_at": int(time.time()) + 3600,
            "filename": document["filename"],
            "purpose": document["purpose"],
            "status": "pending",
        }
        with self.state.lock:
            self.state.uploads[upload["id"]] = upload
        return 200, upload

    def pending_upload(self, upload_id: str) -> dict[str, Any]:
        upload = self.state.uploads.get(upload_id)
        if upload is None:
            raise Failure(404, "no such upload")
        if upload["status"] != "pending":
            raise Failure(409, f"the upload is {upload['status']}")
        return upload

    def add_part(self, upload_id: str) -> tuple[int, dict[str, Any]]:
        self.pending_upload(upload_id)
        match = re.match(
            r'multipart/form-data;\s*boundary="?([^";]+)"?', self.headers.get("Content-Type", "")
        )
        if match is None:
            raise Failure(415, "Content-Type must be multipart/form-data with a boundary")
        boundary = match.group(1).encode()
        length = self.content_length()
        opening = b"--" + boundary + b"\r\n"
        first = self.rfile.read(min(length, MAX_HEAD))
        head_end = first.find(b"\r\n\r\n")
        if not first.startswith(opening) or head_end < 0:
            raise Failure(400, "malformed multipart head")
        head = first[len(opening) : head_end].decode("latin-1").lower()
        if 'name="data"' not in head or "filename=" not in head:
            raise Failure(400, "the part must be one 'data' field with a filename")
        closings = (b"\r\n--" + boundary + b"--\r\n", b"\r\n--" + boundary + b"--")
        data_start = head_end + 4
        part_id = f"part_{uuid.uuid4().hex}"
        path = self.state.spool_file()
        started = time.monotonic()
        received = len(first)
        bandwidth = self.state.bandwidth
        buffer = bytearray(CHUNK)
        view = memoryview(buffer)
        tail = bytearray()
        with os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o600), "r+b") as out:
            out.write(first[data_start:])
            remaining = length - received
            while remaining > 0:
                count = self.rfile.readinto(view[: min(CHUNK, remaining)])  # type: ignore[attr-defined]
                if not count:
                    path.unlink(missing_ok=True)
                    raise Failure(400, "the body ended before its Content-Length")
                out.write(view[:count])
                remaining -= count
                received += count
                if bandwidth:
                    ahead = received / bandwidth - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
            size = out.tell()
            out.truncate(size)
        # The closing delimiter was written with the data: check it, then cut it off.
        with path.open("r+b") as spooled:
            spooled.seek(max(0, size - len(closings[0])))
            tail = bytearray(spooled.read())
            closing = next((c for c in closings if tail.endswith(c)), None)
            if closing is None:
                path.unlink(missing_ok=True)
                raise Failure(400, "the body does not end with its closing delimiter")
            size -= len(closing)
            spooled.truncate(size)
        if size <= 0 or size > MAX_PART:
            path.unlink(missing_ok=True)
            raise Failure(400, "a part holds 1 byte to 512 MiB")
        part = {"upload_id": upload_id, "size": size, "path": path, "delimiter": b"\r\n--" + boundary}
        with self.state.lock:
            self.pending_upload(upload_id)
            self.state.parts[part_id] = part
        return 200, {
            "object": "upload.part",
            "id": part_id,
            "upload_id": upload_id,
            "created_at": int(time.time()),
        }

    def complete(self, upload_id: str) -> tuple[int, dict[str, Any]]:
        document = self.read_json()
        part_ids = document.get("part_ids")
        md5 = document.get("md5")
        if not isinstance(part_ids, list) or not part_ids or not all(isinstance(p, str) for p in part_ids):
            raise Failure(400, "part_ids must be a non-empty list of ids")
        if md5 is not None and not (isinstance(md5, str) and re.fullmatch(r"[0-9a-fA-F]{32}", md5)):
            raise Failure(400, "md5 must be 32 hex digits")
        with self.state.lock:
            upload = self.pending_upload(upload_id)
            if len(set(part_ids)) != len(part_ids):
                raise Failure(400, "a part is listed twice")
            parts = []
            for part_id in part_ids:
                part = self.state.parts.get(part_id)
                if part is None or part["upload_id"] != upload_id:
                    raise Failure(400, f"part {part_id} is not a part of this upload")
                parts.append(part)
            total = sum(p["size"] for p in parts)
            if total != upload["bytes"]:
                raise Failure(400, f"the parts hold {total} bytes, the upload {upload['bytes']}")
            file = {
                "object": "file",
                "id": f"file-{uuid.uuid4().hex}",
                "bytes": total,
                "created_at": int(time.time()),
                "filename": upload["filename"],
                "purpose": upload["purpose"],
                "status": "pending",
            }
            self.state.files[file["id"]] = file
            upload.update(status="completed", file=file)
            answer = json.loads(json.dumps(upload))
        threading.Thread(target=verify, args=(self.state, file, parts, md5), daemon=True).start()
        return 200, answer

    def cancel(self, upload_id: str) -> tuple[int, dict[str, Any]]:
        with self.state.lock:
            upload = self.pending_upload(upload_id)
            upload["status"] = "cancelled"
            for part_id in [p for p, part in self.state.parts.items() if part["upload_id"] == upload_id]:
                self.state.parts.pop(part_id)["path"].unlink(missing_ok=True)
            return 200, dict(upload)

    def get_file(self, file_id: str) -> tuple[int, dict[str, Any]]:
        with self.state.lock:
            file = self.state.files.get(file_id)
            if file is None or file["status"] == "deleted":
                raise Failure(404, "no such file")
            return 200, dict(file)

    def delete_file(self, file_id: str) -> tuple[int, dict[str, Any]]:
        with self.state.lock:
            file = self.state.files.get(file_id)
            if file is None or file["status"] == "deleted":
                raise Failure(404, "no such file")
            file["status"] = "deleted"
        return 200, {"object": "file", "id": file_id, "deleted": True}


def verify(state: State, file: dict[str, Any], parts: list[dict[str, Any]], md5: str | None) -> None:
    """The deferred checks of ``complete``: the md5 in ``part_ids`` order, no delimiter inside a part."""
    digest = hashlib.md5(usedforsecurity=False)
    problem = None
    overlap = b""
    for part in parts:
        delimiter = part["delimiter"]
        with part["path"].open("rb") as stream:
            while chunk := stream.read(8 * CHUNK):
                digest.update(chunk)
                if delimiter in overlap + chunk[: len(delimiter)] or delimiter in chunk:
                    problem = "a part holds its own multipart delimiter"
                overlap = chunk[-len(delimiter) :]
        overlap = b""
    if problem is None and md5 is not None and md5.lower() != digest.hexdigest():
        problem = f"md5 {md5} does not match the md5 of the assembled parts ({digest.hexdigest()})"
    with state.lock:
        file["status"] = "error" if problem else "processed"
        if problem:
            file["status_details"] = problem
        for part in parts:
            if state.reuse:
                state.free.append(part["path"])
            else:
                part["path"].unlink(missing_ok=True)
        for part_id in [p for p, part in state.parts.items() if any(part is q for q in parts)]:
            del state.parts[part_id]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--spool", required=True, help="directory for part bodies until they are checked")
    parser.add_argument("--bandwidth", type=float, default=None, help="per-connection cap, bytes/s")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added before every request")
    parser.add_argument(
        "--reuse-spool", action="store_true", help="overwrite checked parts' files instead of deleting them"
    )
    args = parser.parse_args()
    spool = Path(args.spool)
    spool.mkdir(parents=True, exist_ok=True)
    Handler.state = State(spool, args.api_key, args.bandwidth, args.latency, args.reuse_spool)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        for path in spool.glob("part_*"):
            os.unlink(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
