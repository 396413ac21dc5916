"""The emulator routes ids as the service does: an id is one opaque path segment, over real HTTP.

Every URL here is sent exactly as written (``send_raw``): ``requests`` would otherwise decode ``%2E`` and
normalise dot segments before the emulator sees them.
"""

from __future__ import annotations

from urllib.parse import unquote

import pytest
import requests

from tests.conftest import API_KEY, CHAT_LINE, jsonl
from tests.emulator_api import ai_token

V = "api-version=2024-10-21"
PROJECT_OPENAI = "/api/projects/demo/openai"
PROJECT_OPENAI_V = "api-version=2025-11-15-preview"
KEY = {"api-key": API_KEY}


def send_raw(method: str, url: str, **kwargs) -> requests.Response:
    """Send ``url`` byte for byte as written (no requoting, no dot-segment removal, no redirects)."""
    with requests.Session() as session:
        prepared = session.prepare_request(requests.Request(method, url, **kwargs))
        prepared.url = url
        return session.send(prepared, timeout=10, allow_redirects=False)


def last_record(emulator):
    return emulator.faults.requests[-1]


@pytest.fixture(scope="module")
def foundry_bearer(emulator) -> dict[str, str]:
    return ai_token(emulator)


@pytest.fixture
def file_id(emulator) -> str:
    answer = requests.post(
        f"{emulator.url}/openai/files?{V}",
        headers=KEY,
        files={"file": ("a.jsonl", jsonl([CHAT_LINE]))},
        data={"purpose": "fine-tune"},
        timeout=10,
    )
    assert answer.status_code == 201, answer.text
    return answer.json()["id"]


@pytest.fixture
def upload_id(emulator) -> str:
    answer = requests.post(
        f"{emulator.url}/openai/uploads?{V}",
        headers=KEY,
        json={"purpose": "fine-tune", "filename": "a.jsonl", "bytes": 10, "mime_type": "text/jsonl"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["id"]


# Every service route with a file id, per surface: (prefix, query, method, path after the prefix).
FILE_ROUTES = [
    (prefix, query, method, path)
    for prefix, query in (
        ("/openai", V),
        ("/openai/v1", ""),
        ("/api/projects/demo", "api-version=v1"),
        (PROJECT_OPENAI, PROJECT_OPENAI_V),
    )
    for method, path in (("GET", "/files/{id}"), ("DELETE", "/files/{id}"), ("GET", "/files/{id}/content"))
]
OPERATION = {
    ("GET", "/files/{id}"): "files.get",
    ("DELETE", "/files/{id}"): "files.delete",
    ("GET", "/files/{id}/content"): "files.content",
    ("POST", "/uploads/{id}/parts"): "uploads.parts",
    ("POST", "/uploads/{id}/complete"): "uploads.complete",
    ("POST", "/uploads/{id}/cancel"): "uploads.cancel",
}
# What a decoded "%2F" would have turned each id into: another route of the same object.
SIBLINGS = ["content", "cancel", "complete", "parts", "..", "%2E%2E", "%2e", "..%2Fimport", "x%23y", "x%3Fy"]


def _auth(prefix: str, bearer: dict[str, str]) -> dict[str, str]:
    return bearer if prefix.startswith("/api/projects") else KEY


@pytest.mark.parametrize(("prefix", "query", "method", "path"), FILE_ROUTES)
@pytest.mark.parametrize("sibling", SIBLINGS)
def test_an_encoded_slash_in_a_file_id_is_part_of_the_id(
    emulator, foundry_bearer, file_id, prefix, query, method, path, sibling
):
    url = f"{emulator.url}{prefix}{path.replace('{id}', f'{file_id}%2F{sibling}')}?{query}"
    answer = send_raw(method, url, headers=_auth(prefix, foundry_bearer))

    assert answer.status_code == 404, answer.text
    error = answer.json()["error"]
    # OpenAI's error object of a project's OpenAI route has no code for a missing object.
    assert error["code"] == (None if prefix == PROJECT_OPENAI else "notFound")
    assert error.get("target", error.get("param")) == "file_id"
    record = last_record(emulator)
    assert record.operation == OPERATION[(method, path)]
    assert record.params["file_id"] == unquote(f"{file_id}%2F{sibling}")
    # The file itself is untouched: not deleted, and its content was not served.
    assert requests.get(f"{emulator.url}/openai/files/{file_id}?{V}", headers=KEY, timeout=10).ok


@pytest.mark.parametrize("route", ["parts", "complete", "cancel"])
@pytest.mark.parametrize("sibling", ["cancel", "complete", "parts", "%2E%2E", "x%23y"])
@pytest.mark.parametrize("prefix", ["/openai", "/openai/v1"])
def test_an_encoded_slash_in_an_upload_id_is_part_of_the_id(emulator, upload_id, route, sibling, prefix):
    query = V if prefix == "/openai" else "api-version=v1"
    kwargs = (
        {"files": {"data": ("blob", b"x")}}
        if route == "parts"
        else {"json": {"part_ids": ["uplprt-x"]}}
        if route == "complete"
        else {}
    )
    url = f"{emulator.url}{prefix}/uploads/{upload_id}%2F{sibling}/{route}?{query}"
    answer = send_raw("POST", url, headers=KEY, **kwargs)

    assert answer.status_code == 404, answer.text
    error = answer.json()["error"]
    assert error.get("target", error.get("param")) == "upload_id"
    assert last_record(emulator).operation == f"uploads.{route}"
    assert emulator.store.get_upload(upload_id)["status"] == "pending"


@pytest.mark.parametrize("sibling", ["cancel", "complete", "parts"])
def test_an_upload_id_with_an_encoded_action_addresses_no_operation(emulator, upload_id, sibling):
    """``POST /uploads/<id>%2Fcancel`` is not ``cancel`` of ``<id>``: no operation lives at that path."""
    answer = send_raw("POST", f"{emulator.url}/openai/uploads/{upload_id}%2F{sibling}?{V}", headers=KEY)

    assert answer.status_code == 404, answer.text
    assert answer.json()["error"]["code"] == "notFound"
    assert last_record(emulator).operation is None
    assert emulator.store.get_upload(upload_id)["status"] == "pending"


@pytest.mark.parametrize(
    "path",
    [
        "/openai/files%2F{id}/content",
        "/openai%2Ffiles/{id}/content",
        "/openai/files%2F{id}%2Fcontent",
        "/openai/v1%2Ffiles/{id}/content",
        "/api/projects/demo/files%2F{id}/content",
        "/api%2Fprojects/demo/files/{id}/content",
        "/api/projects/demo/openai%2Ffiles/{id}/content",
    ],
)
def test_an_encoded_slash_in_a_fixed_segment_is_no_separator(emulator, foundry_bearer, file_id, path):
    url = f"{emulator.url}{path.replace('{id}', file_id)}?{V}"
    answer = send_raw("GET", url, headers={**KEY, **foundry_bearer} if "projects" in path else KEY)

    assert answer.status_code == 404, answer.text
    assert answer.json()["error"]["code"] == "notFound"
    assert last_record(emulator).operation is None
    assert jsonl([CHAT_LINE]).decode() not in answer.text


def test_an_empty_id_is_not_redirected_to_the_list(emulator):
    answer = send_raw("GET", f"{emulator.url}/openai/files/?{V}", headers=KEY)

    assert answer.status_code == 404, answer.text
    assert "location" not in answer.headers
    assert answer.json()["error"]["code"] == "notFound"


def test_a_project_name_is_one_segment(emulator, foundry_bearer):
    answer = send_raw(
        "GET", f"{emulator.url}/api/projects/p%2Ffiles/files?api-version=v1", headers=foundry_bearer
    )

    assert answer.status_code == 200, answer.text
    assert answer.json()["object"] == "list"
    record = last_record(emulator)
    assert (record.operation, record.params) == ("files.list", {"project": "p/files"})
    assert record.path == "/api/projects/p%2Ffiles/files"


@pytest.mark.parametrize("name", ["a%2Fb", "..%2Fmeta", "%2E%2E", "%2Ehidden", "a%5Cb"])
@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_a_blob_name_is_one_segment_and_never_leaves_the_container(emulator, name, method):
    answer = send_raw(method, f"{emulator.url}/_emulator/blobs/{name}?sig=x", headers=KEY, data=b"x")

    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["target"] == "name"
    assert last_record(emulator).params == {"name": unquote(name)}


def test_blob_names_are_encoded_in_blob_urls(emulator):
    url = emulator.put_blob("a b#c?.jsonl", b"payload")

    assert "/_emulator/blobs/a%20b%23c%3F.jsonl?" in url
    assert requests.get(url, headers=KEY, timeout=10).content == b"payload"


def test_a_forced_status_addresses_only_the_id_given(emulator, file_id):
    answer = send_raw(
        "POST",
        f"{emulator.url}/_emulator/files/{file_id}%2Fcontent/statuses",
        headers=KEY,
        json={"statuses": ["error"]},
    )

    assert answer.status_code == 404, answer.text
    assert answer.json()["error"]["target"] == "file_id"
    assert requests.get(f"{emulator.url}/openai/files/{file_id}?{V}", headers=KEY, timeout=10).json()[
        "status"
    ] in ("pending", "running", "processed")


@pytest.mark.parametrize(
    "path",
    [
        "/a%2Fb/v2.0/.well-known/openid-configuration",
        "/..%2F_emulator/oauth2/v2.0/token",
    ],
)
def test_a_tenant_is_one_segment(emulator, path):
    method = "POST" if path.endswith("token") else "GET"
    answer = send_raw(method, f"{emulator.url}{path}", data={"grant_type": "client_credentials"})

    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "invalid_request"


# ------------------------------------------------------------------------------ ids no object can have
@pytest.mark.parametrize(
    ("path", "target"),
    [
        (f"/openai/files/%00?{V}", "file_id"),
        (f"/openai/files/a%0Ab/content?{V}", "file_id"),
        ("/openai/v1/files/%7F", "file_id"),
        (f"/openai/uploads/%07/cancel?{V}", "upload_id"),
        ("/api/projects/p%0D%0Ax/files?api-version=v1", "project"),
        (f"/api/projects/p/openai/files/a%0Ab?{PROJECT_OPENAI_V}", "file_id"),
        (f"/openai/files/%FF%FE?{V}", "file_id"),
        ("/_emulator/files/%00/statuses", "file_id"),
        ("/_emulator/blobs/a%00b", "name"),
        ("/_emulator/blobs/%C2%85", "name"),
    ],
)
def test_control_characters_and_bad_utf8_in_an_id_are_a_400(emulator, foundry_bearer, path, target):
    method = "POST" if path.split("?")[0].endswith(("cancel", "statuses")) else "GET"
    headers = foundry_bearer if path.startswith("/api/") else KEY
    answer = send_raw(method, f"{emulator.url}{path}", headers=headers, json={"statuses": ["error"]})

    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "invalidPayload"
    assert error.get("target", error.get("param")) == target
    # The id is judged only once the caller is known.
    assert send_raw(method, f"{emulator.url}{path}").status_code == 401
