"""Random paths, headers and bodies at every route of the emulator, over real HTTP: never a 5xx (other than a
fault a request scripted), and every error answered with a JSON body."""

from __future__ import annotations

import json
import string
from urllib.parse import quote

import pytest
import requests
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from airflow_provider_aoai.emulator import Emulator, Throttle
from tests.conftest import CHAT_LINE, jsonl
from tests.emulator_api import new_upload

API_KEY = "fuzz-api-key-0123456789"
V = "api-version=2024-10-21"
PROJECT_OPENAI_V = "api-version=2025-11-15-preview"

# Every route of the emulator with its methods, ids as {name}.
ROUTES = [
    (methods, f"{prefix}{path}")
    for prefix in ("/openai", "/openai/v1", "/api/projects/{project}", "/api/projects/{project}/openai")
    for methods, path in (
        (("GET", "POST"), "/files"),
        (("POST",), "/files/import"),
        (("GET", "DELETE"), "/files/{file_id}"),
        (("GET",), "/files/{file_id}/content"),
        (("POST",), "/uploads"),
        (("POST",), "/uploads/{upload_id}/parts"),
        (("POST",), "/uploads/{upload_id}/complete"),
        (("POST",), "/uploads/{upload_id}/cancel"),
    )
] + [
    (("GET",), "/_emulator/identity/token"),
    (("GET",), "/{tenant}/v2.0/.well-known/openid-configuration"),
    (("POST",), "/{tenant}/oauth2/v2.0/token"),
    (("GET", "POST", "DELETE"), "/_emulator/faults"),
    (("POST",), "/_emulator/link"),
    (("GET", "POST"), "/_emulator/throttle"),
    (("POST",), "/_emulator/files/{file_id}/statuses"),
    (("GET",), "/_emulator/uploads"),
    (("GET", "PUT"), "/_emulator/blobs/{name}"),
    (("GET",), "/_emulator/health"),
]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
# Characters a client may put in a path unencoded (requests would otherwise re-encode the URL).
RAW_SEGMENT_CHARS = string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@%"
HEADER_CHARS = string.ascii_letters + string.digits + " -_.,;:=/+*()'\"<>[]{}?!@#$%&~^|\\`"


def new_file(emu: Emulator) -> str:
    answer = requests.post(
        f"{emu.url}/openai/files?{V}",
        headers={"api-key": API_KEY},
        files={"file": ("a.jsonl", jsonl([CHAT_LINE]))},
        data={"purpose": "fine-tune"},
        timeout=10,
    )
    return answer.json()["id"]


@pytest.fixture(scope="module")
def fuzz_target():
    """A fresh emulator with one real file and one pending upload, so fuzzed requests also reach objects; no
    rate limits (examples create files as fast as they run)."""
    with Emulator(
        api_key=API_KEY, processing_seconds=0.05, max_file_bytes=64 * 1024, throttle=Throttle.off()
    ) as emu:
        file_id, upload_id = new_file(emu), new_upload(emu, 64, headers={"api-key": API_KEY})
        emu.put_blob("blob.jsonl", jsonl([CHAT_LINE]))
        token = requests.get(
            emu.identity_endpoint,
            params={"resource": "https://ai.azure.com"},
            headers={"X-IDENTITY-HEADER": emu.identity.header_secret},
            timeout=10,
        ).json()["access_token"]
        ids = {
            "file_id": file_id,
            "upload_id": upload_id,
            "name": "blob.jsonl",
            "project": "p",
            "tenant": "t",
        }
        yield emu, ids, token


# ------------------------------------------------------------------------------ strategies
def segments() -> st.SearchStrategy[str]:
    """One path segment as sent: any text percent-encoded with nothing safe, or raw characters (including
    stray ``%`` that do not form an escape)."""
    encoded = st.text(max_size=24).map(lambda text: quote(text.encode("utf-8", "surrogatepass"), safe=""))
    raw = st.text(alphabet=RAW_SEGMENT_CHARS, max_size=24)
    byte_escapes = st.binary(max_size=8).map(lambda data: "".join(f"%{b:02X}" for b in data))
    return st.one_of(encoded, raw, byte_escapes)


@st.composite
def requests_lines(draw, ids: dict[str, str]) -> tuple[str, str]:
    """A method and a path: mostly a route's own method with fuzzed ids, now and then anything at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.sampled_from(METHODS)), "/" + "/".join(draw(st.lists(segments(), max_size=6)))
    methods, template = draw(st.sampled_from(ROUTES))
    method = draw(st.sampled_from(methods)) if draw(st.integers(0, 6)) else draw(st.sampled_from(METHODS))
    parts = []
    for piece in template.strip("/").split("/"):
        part = piece
        if piece.startswith("{"):
            real = quote(ids[piece[1:-1]], safe="")
            choice = draw(st.sampled_from(["real", "random", "real/random"]))
            part = real if choice == "real" else draw(segments())
            if choice == "real/random":
                part = f"{real}%2F{part}"
        parts.append(part)
    return method, "/" + "/".join(parts)


queries = st.one_of(
    st.just(V),
    st.just("api-version=v1"),
    st.just(PROJECT_OPENAI_V),
    st.just(""),
    st.lists(
        st.tuples(
            st.sampled_from(["api-version", "after", "limit", "order", "purpose", "resource", "sig", "x"]),
            st.text(max_size=16),
        ),
        max_size=4,
    ).map(
        lambda pairs: "&".join(
            f"{quote(k)}={quote(v.encode('utf-8', 'surrogatepass'), safe='')}" for k, v in pairs
        )
    ),
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=16),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=20,
)
# Shaped like the documents the emulator reads, with random values and extra keys.
KNOWN_KEYS = [
    "purpose",
    "filename",
    "bytes",
    "mime_type",
    "content_url",
    "part_ids",
    "md5",
    "operation",
    "status",
    "count",
    "drop",
    "after",
    "delay_seconds",
    "retry_after",
    "retry_after_ms",
    "path_contains",
    "bandwidth_bytes_per_second",
    "latency_seconds",
    "statuses",
    "status_details",
    "creates",
    "parts",
    "reads",
]
json_documents = st.dictionaries(st.sampled_from(KNOWN_KEYS) | st.text(max_size=8), json_values, max_size=8)


@st.composite
def multipart_bodies(draw) -> tuple[str, bytes]:
    boundary = draw(
        st.text(alphabet=string.ascii_letters + string.digits + "'()+_,-./:=?", min_size=0, max_size=72)
    )
    chunks = []
    for _ in range(draw(st.integers(0, 4))):
        name = draw(
            st.sampled_from(["file", "data", "purpose", "filename", "grant_type", "client_id"])
            | st.text(max_size=8)
        )
        disposition = f'form-data; name="{name}"'
        if draw(st.booleans()):
            disposition += f'; filename="{draw(st.text(max_size=12))}"'
        if draw(st.integers(0, 5)) == 0:
            disposition = draw(st.text(max_size=40))
        value = draw(
            st.binary(max_size=64) | st.sampled_from([b"fine-tune", b"assistants", jsonl([CHAT_LINE])])
        )
        chunks.append(
            f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode("utf-8", "surrogatepass")
            + value
            + b"\r\n"
        )
    if draw(st.booleans()):
        chunks.append(f"--{boundary}--\r\n".encode())
    body = b"".join(chunks)
    if draw(st.integers(0, 4)) == 0:  # truncated
        body = body[: draw(st.integers(0, len(body)))]
    return f"multipart/form-data; boundary={boundary}", body


@st.composite
def bodies(draw) -> tuple[str | None, bytes]:
    kind = draw(st.sampled_from(["none", "json", "json-any", "deep", "multipart", "form", "bytes"]))
    if kind == "none":
        return None, b""
    if kind == "json":
        return "application/json", json.dumps(draw(json_documents)).encode()
    if kind == "json-any":
        return draw(st.sampled_from(["application/json", "text/json", "application/x+json"])), json.dumps(
            draw(json_values)
        ).encode()
    if kind == "deep":
        depth = draw(st.integers(500, 5000))
        return "application/json", ("[" * depth + "]" * depth).encode()
    if kind == "multipart":
        return draw(multipart_bodies())
    if kind == "form":
        pairs = draw(st.lists(st.tuples(st.text(max_size=10), st.text(max_size=20)), max_size=5))
        return "application/x-www-form-urlencoded", "&".join(
            f"{quote(k.encode('utf-8', 'surrogatepass'))}={quote(v.encode('utf-8', 'surrogatepass'))}"
            for k, v in pairs
        ).encode()
    # requests refuses header values with leading whitespace: strip them, as a real client would send them
    content_type = draw(st.text(alphabet=HEADER_CHARS, max_size=40).map(str.strip) | st.none())
    return content_type or None, draw(st.binary(max_size=256))


@st.composite
def auth_headers(draw) -> dict[str, str]:
    choice = draw(st.sampled_from(["none", "key", "bearer-key", "wrong", "random"]))
    if choice == "key":
        return {"api-key": API_KEY}
    if choice == "bearer-key":
        return {"Authorization": f"Bearer {API_KEY}"}
    if choice == "wrong":
        return {"api-key": "wrong", "Authorization": "Bearer wrong"}
    if choice == "random":
        return draw(
            st.dictionaries(
                st.sampled_from(
                    ["api-key", "Authorization", "X-IDENTITY-HEADER", "x-aoai-emulator-internal", "Host"]
                ),
                st.text(alphabet=HEADER_CHARS, min_size=1, max_size=40).map(str.strip).filter(bool),
                max_size=3,
            )
        )
    return {}


# ------------------------------------------------------------------------------ the property
def send_raw(method: str, url: str, headers: dict[str, str], body: bytes) -> requests.Response:
    with requests.Session() as session:
        prepared = session.prepare_request(requests.Request(method, url, headers=headers, data=body or None))
        prepared.url = url
        return session.send(prepared, timeout=30, allow_redirects=False)


def record_operation(emu: Emulator) -> str | None:
    return emu.faults.requests[-1].operation if emu.faults.requests else None


def check(emu: Emulator, method: str, path: str, query: str, headers: dict[str, str], body: bytes) -> None:
    emu.faults.clear()  # a previous example may have scripted a fault, a delay or a slow link
    emu.throttler.reset()  # or set a rate limit
    url = f"{emu.url}{path}" + (f"?{query}" if query else "")
    answer = send_raw(method, url, headers, body)
    event(f"{answer.status_code} {record_operation(emu)}")
    record = emu.faults.requests[-1] if emu.faults.requests else None
    scripted = record is not None and record.fault is not None
    assert answer.status_code < 500 or scripted, (
        f"{method} {url} -> {answer.status_code}: {answer.text[:300]}"
    )
    if answer.status_code >= 400 and method != "HEAD":
        assert isinstance(answer.json(), dict), answer.text[:300]


FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


@FUZZ
@given(data=st.data())
def test_random_requests_never_get_a_5xx(fuzz_target, data):
    emu, ids, _ = fuzz_target
    method, path = data.draw(requests_lines(ids), label="request line")
    query = data.draw(queries, label="query")
    headers = data.draw(auth_headers(), label="auth")
    content_type, body = data.draw(bodies(), label="body")
    if content_type is not None:
        headers = {**headers, "Content-Type": content_type}
    check(emu, method, path, query, headers, body)


@FUZZ
@given(data=st.data())
def test_authenticated_writes_with_random_bodies_never_get_a_5xx(fuzz_target, data):
    """The same, aimed at the handlers: a valid key, a writing method and a real route."""
    emu, ids, token = fuzz_target
    methods, template = data.draw(
        st.sampled_from([r for r in ROUTES if "{tenant}" not in r[1]]), label="route"
    )
    method = data.draw(st.sampled_from(methods), label="method")
    fresh = dict(ids)
    if "{file_id}" in template:  # an earlier example may have deleted the shared one
        fresh["file_id"] = new_file(emu)
    if "{upload_id}" in template:
        fresh["upload_id"] = new_upload(emu, 64, headers={"api-key": API_KEY})
    path = template.format(**{k: quote(v, safe="") for k, v in fresh.items()})
    if template.startswith("/api/projects/{project}/openai/"):
        query = PROJECT_OPENAI_V
    else:
        query = "api-version=v1" if path.startswith("/api/") else V
    content_type, body = data.draw(bodies(), label="body")
    headers = {"Authorization": f"Bearer {token}"} if path.startswith("/api/") else {"api-key": API_KEY}
    if content_type is not None:
        headers["Content-Type"] = content_type
    check(emu, method, path, query, headers, body)
