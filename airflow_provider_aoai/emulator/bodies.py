"""Request bodies: JSON documents, and multipart/form-data streamed straight into files under the data dir.

Every malformed or oversized body becomes a :class:`StoreError` (a 4xx), never an exception of the parser.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from python_multipart.multipart import MultipartParser, parse_options_header

from airflow_provider_aoai.emulator.errors import bad
from airflow_provider_aoai.emulator.store import end_sparse, write_sparse
from airflow_provider_aoai.models import Surface, purposes_for

if TYPE_CHECKING:
    from starlette.requests import Request

    from airflow_provider_aoai.emulator.store import Store

JSON_CONTENT_TYPES = ("application/json", "text/json")
MAX_JSON_BODY = 1024 * 1024
MAX_FORM_FIELD = 64 * 1024


async def drain(request: Request) -> None:
    """Read the rest of the body, so that the client reads our 4xx instead of a reset connection."""
    async for _ in request.stream():
        pass


async def read_json(request: Request, *, any_content_type: bool = False) -> dict[str, Any]:
    """The body as a JSON object.

    :param any_content_type: accept any Content-Type (the control endpoints, for ``curl -d``); the service's
        operations need ``application/json``.
    """
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not any_content_type and (
        content_type not in JSON_CONTENT_TYPES
        and not (content_type.startswith("application/") and content_type.endswith("+json"))
    ):
        await drain(request)
        raise bad(f"Content-Type must be application/json, got {content_type or 'none'!r}.", status=415)
    body = bytearray()
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= MAX_JSON_BODY:
            body += chunk
    if size > MAX_JSON_BODY:
        raise bad(f"The JSON body exceeds the limit of {MAX_JSON_BODY} bytes.", status=413)
    try:
        document = json.loads(body)
    except RecursionError:
        raise bad("The JSON body is nested too deeply.") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise bad(f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(document, dict):
        raise bad("The request body must be a JSON object.")
    return document


@dataclass
class FormFile:
    path: Path
    filename: str | None
    size: int


@dataclass
class Form:
    fields: dict[str, str]
    files: dict[str, FormFile]


async def read_form(request: Request, store: Store, *, file_field: str, max_bytes: int) -> Form:
    """Stream a multipart/form-data body: ``file_field`` to a file under the data dir, others to memory.

    Over-limit content is drained, not stored, so the client still receives our 4xx instead of a reset.
    """
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or not params.get(b"boundary"):
        await drain(request)
        raise bad("Content-Type must be multipart/form-data with a boundary.", status=415)

    fields: dict[str, str] = {}
    files: dict[str, FormFile] = {}
    state: dict[str, Any] = {"headers": {}, "name": None, "sink": None, "size": 0, "error": None}
    header_field = bytearray()
    header_value = bytearray()

    def on_part_begin() -> None:
        state.update(headers={}, name=None, sink=None, size=0)

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_field.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        state["headers"][bytes(header_field).lower()] = bytes(header_value)
        header_field.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        _, disposition = parse_options_header(state["headers"].get(b"content-disposition", b""))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        state["name"] = name
        if name == file_field:
            path = store.incoming_path()
            filename = disposition.get(b"filename")
            state["file"] = FormFile(path, filename.decode("utf-8", "replace") if filename else None, 0)
            state["sink"] = path.open("wb")
        else:
            state["sink"] = bytearray()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        sink = state["sink"]
        length = end - start
        state["size"] += length
        if isinstance(sink, bytearray):
            if state["size"] > MAX_FORM_FIELD:
                state["error"] = state["error"] or bad(f"Form field '{state['name']}' is too large.")
                return
            sink.extend(data[start:end])
        elif state["size"] > max_bytes:
            state["error"] = state["error"] or bad(
                f"'{file_field}' exceeds the limit of {max_bytes} bytes.", file_field, status=413
            )
        elif sink is not None:
            write_sparse(sink, data[start:end])

    def on_part_end() -> None:
        sink = state["sink"]
        if isinstance(sink, bytearray):
            fields[state["name"]] = sink.decode("utf-8", "replace")
        elif sink is not None:
            end_sparse(sink)
            sink.close()
            form_file = state["file"]
            form_file.size = state["size"]
            if state["name"] in files:
                files[state["name"]].path.unlink(missing_ok=True)
            files[state["name"]] = form_file
        state["sink"] = None

    parser = MultipartParser(
        params[b"boundary"],
        {
            "on_part_begin": on_part_begin,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
        },
    )
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except ValueError as exc:  # python-multipart's parse errors: a malformed body is the client's mistake
        state["error"] = state["error"] or bad(f"Malformed multipart body: {exc}.")
    finally:
        if not isinstance(state["sink"], (bytearray, type(None))):
            state["sink"].close()
            state["file"].path.unlink(missing_ok=True)
    if state["error"] is not None:
        for form_file in files.values():
            form_file.path.unlink(missing_ok=True)
        raise state["error"]
    return Form(fields, files)


def required_field(document: dict[str, Any], name: str, kind: type = str) -> Any:
    """``document[name]``, present, not null and of ``kind`` (a ``str`` must not be blank)."""
    if name not in document or document[name] is None:
        raise bad(f"Missing required field '{name}'.", name)
    value = document[name]
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise bad(f"Field '{name}' must be an integer.", name)
    if kind is str and not isinstance(value, str):
        raise bad(f"Field '{name}' must be a string.", name)
    if kind is str and not value.strip():
        raise bad(f"Field '{name}' must not be empty.", name)
    return value


def checked_purpose(value: str, surface: Surface, operation: str) -> str:
    """``value`` if it is a purpose ``surface`` accepts for ``operation``."""
    allowed = purposes_for(surface, operation)
    if value not in allowed:
        raise bad(f"Unknown purpose '{value}'; expected one of: {', '.join(allowed)}.", "purpose")
    return value
