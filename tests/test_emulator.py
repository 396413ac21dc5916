"""The emulator itself, over real HTTP: spec examples, rules, bad input, auth, faults, persistence, CLI."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from airflow_provider_aoai.emulator import Emulator
from tests.conftest import API_KEY, BATCH_LINE, CHAT_LINE, DATA_PLANE_EXAMPLES, FOUNDRY_EXAMPLES, jsonl
from tests.emulator_api import KEY, V, emulator_process


def wait_for_status(emu: Emulator, file_id: str, *, timeout: float = 10.0) -> dict:
    """Poll (the emulator's processing is time based) until the file is terminal."""
    deadline = time.monotonic() + timeout
    while True:
        file = requests.get(f"{emu.url}/openai/files/{file_id}", params=V, headers=KEY, timeout=10).json()
        if file["status"] in ("processed", "error", "deleted") or time.monotonic() > deadline:
            return file
        time.sleep(0.05)


def upload(
    emu: Emulator, content: bytes, *, purpose: str = "fine-tune", name: str = "data.jsonl"
) -> requests.Response:
    return requests.post(
        f"{emu.url}/openai/files",
        params=V,
        headers=KEY,
        files={"file": (name, content)},
        data={"purpose": purpose},
    )


def token(emu: Emulator, resource: str) -> str:
    answer = requests.get(
        emu.identity_endpoint,
        params={"api-version": "2019-08-01", "resource": resource},
        headers={"X-IDENTITY-HEADER": emu.identity.header_secret},
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["access_token"]


def assert_shape(actual, expected, path="body", ignore=()):
    """``actual`` has every field of ``expected`` with the same JSON type, recursively."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: expected an object, got {actual!r}"
        for key, value in expected.items():
            if key in ignore:
                continue
            assert key in actual, f"{path}.{key} is missing from {actual!r}"
            assert_shape(actual[key], value, f"{path}.{key}", ignore)
    elif isinstance(expected, list):
        assert isinstance(actual, list), f"{path}: expected a list"
        if expected:
            assert actual, f"{path}: expected a non-empty list"
            assert_shape(actual[0], expected[0], f"{path}[0]", ignore)
    elif isinstance(expected, bool):
        assert isinstance(actual, bool), f"{path}: expected a boolean, got {actual!r}"
    elif isinstance(expected, int):
        assert isinstance(actual, int) and not isinstance(actual, bool), (
            f"{path}: expected an integer, got {actual!r}"
        )
    elif isinstance(expected, str):
        assert isinstance(actual, str), f"{path}: expected a string, got {actual!r}"


def load(name: str, folder: Path = DATA_PLANE_EXAMPLES) -> dict:
    return json.loads((folder / name).read_text())


# ------------------------------------------------------------------------------ one test per spec example
def _start_upload(emu, body):
    return requests.post(f"{emu.url}/openai/uploads", params=V, headers=KEY, json=body)


def _part(emu, upload_id, data):
    return requests.post(
        f"{emu.url}/openai/uploads/{upload_id}/parts", params=V, headers=KEY, files={"data": ("blob", data)}
    )


def test_example_upload_file(emulator):
    example = load("upload_file.json")
    params = example["parameters"]
    answer = upload(emulator, params["file"].encode(), purpose=params["purpose"], name="puppy.jsonl")
    assert answer.status_code == 201
    # The example's Location has no query; the live service's carries the api-version of the request
    # (tests/specs/recordings/aoai_batch_file_create_get_delete_2025-01-01-preview.json): the recording wins.
    assert (
        answer.headers["location"]
        == f"{emulator.url}/openai/files/{answer.json()['id']}?api-version=2024-10-21"
    )
    assert_shape(answer.json(), example["responses"]["201"]["body"])
    assert answer.json()["status"] == "pending"


def test_example_import_file(emulator):
    example = load("import_file.json")
    answer = requests.post(
        f"{emulator.url}/openai/files/import", params=V, headers=KEY, json=example["parameters"]["fileImport"]
    )
    assert answer.status_code == 201
    assert answer.headers["location"].endswith(f"/openai/files/{answer.json()['id']}")
    assert_shape(answer.json(), example["responses"]["201"]["body"])


def test_example_get_file(emulator):
    example = load("get_file.json")
    created = upload(emulator, jsonl([CHAT_LINE]), name="puppy.jsonl").json()
    file = wait_for_status(emulator, created["id"])
    assert file["status"] == "processed"
    assert_shape(file, example["responses"]["200"]["body"])


def test_example_get_files(emulator):
    example = load("get_files.json")
    upload(emulator, jsonl([CHAT_LINE]), name="puppy.jsonl")
    answer = requests.get(f"{emulator.url}/openai/files", params=V, headers=KEY)
    assert answer.status_code == 200
    assert_shape(answer.json(), example["responses"]["200"]["body"])


def test_example_delete_file(emulator):
    example = load("delete_file.json")
    created = upload(emulator, jsonl([CHAT_LINE])).json()
    answer = requests.delete(f"{emulator.url}/openai/files/{created['id']}", params=V, headers=KEY)
    assert answer.status_code == 200
    assert answer.json() == {"object": "file", "deleted": True, "id": created["id"]}
    assert_shape(answer.json(), example["responses"]["200"]["body"])
    assert (
        requests.get(f"{emulator.url}/openai/files/{created['id']}", params=V, headers=KEY).status_code == 404
    )


def test_example_upload_start(emulator):
    example = load("upload_file_start.json")
    answer = _start_upload(emulator, example["parameters"]["body"])
    assert answer.status_code == 200
    # The example answers with Location .../openai/uploads/runs/{id}; the live service sends none
    # (tests/specs/recordings/aoai_upload_create_cancel_*.json): the recording wins.
    assert "location" not in answer.headers
    # The example shows a nested file on a pending upload; UploadResource.file is optional and a pending
    # upload has no file yet, so that one field is not compared.
    assert_shape(answer.json(), example["responses"]["200"]["body"], ignore=("file",))
    assert answer.json()["status"] == "pending"


def test_example_upload_part(emulator):
    example = load("upload_file_part.json")
    upload_id = _start_upload(
        emulator, {"purpose": "fine-tune", "filename": "x.jsonl", "bytes": 16, "mime_type": "text/jsonl"}
    ).json()["id"]
    answer = _part(emulator, upload_id, example["parameters"]["data"].encode())
    assert answer.status_code == 200
    assert_shape(answer.json(), example["responses"]["200"]["body"])
    assert answer.json()["upload_id"] == upload_id


def test_example_upload_complete_with_block_ids(emulator):
    example = load("upload_file_complete.json")
    first, second = jsonl([CHAT_LINE]), jsonl([CHAT_LINE] * 2)
    upload_id = _start_upload(
        emulator,
        {
            "purpose": "fine-tune",
            "filename": "training_data_v21.jsonl",
            "bytes": len(first + second),
            "mime_type": "application/json",
        },
    ).json()["id"]
    parts = [_part(emulator, upload_id, data).json() for data in (first, second)]
    # The spec's example lists azure_block_id values as part_ids.
    answer = requests.post(
        f"{emulator.url}/openai/uploads/{upload_id}/complete",
        params=V,
        headers=KEY,
        json={
            "part_ids": [p["azure_block_id"] for p in parts],
            "md5": hashlib.md5(first + second).hexdigest(),
        },
    )
    assert answer.status_code == 200, answer.text
    assert_shape(answer.json(), example["responses"]["200"]["body"])
    assert answer.json()["status"] == "completed"
    file = wait_for_status(emulator, answer.json()["file"]["id"])
    assert file["status"] == "processed"
    content = requests.get(f"{emulator.url}/openai/files/{file['id']}/content", params=V, headers=KEY).content
    assert content == first + second


def test_example_upload_cancel(emulator):
    example = load("upload_file_cancel.json")
    upload_id = _start_upload(
        emulator, {"purpose": "fine-tune", "filename": "x.jsonl", "bytes": 10, "mime_type": "text/jsonl"}
    ).json()["id"]
    answer = requests.post(f"{emulator.url}/openai/uploads/{upload_id}/cancel", params=V, headers=KEY)
    assert answer.status_code == 200
    assert_shape(answer.json(), example["responses"]["200"]["body"], ignore=("file",))
    assert answer.json()["status"] == "cancelled"


@pytest.mark.parametrize(
    "example_name", ["Files_UploadFile_MaximumSet_Gen.json", "Files_UploadFile_MinimumSet_Gen.json"]
)
def test_example_foundry_upload(emulator, example_name):
    example = load(example_name, FOUNDRY_EXAMPLES)
    params = example["parameters"]
    content = params["file"].encode() if isinstance(params["file"], str) else bytes(params["file"])
    data = {"purpose": params["purpose"]}
    if "filename" in params:
        data["filename"] = params["filename"]
    answer = requests.post(
        f"{emulator.project_url('p1')}/files",
        params={"api-version": "v1"},
        headers={"Authorization": f"Bearer {token(emulator, 'https://ai.azure.com')}"},
        files={"file": ("upload.bin", content)},
        data=data,
    )
    assert answer.status_code == 200, answer.text
    expected = {k: v for k, v in example["responses"]["200"]["body"].items() if k != "status_details"}
    assert_shape(answer.json(), expected)
    assert answer.json()["filename"] == params.get("filename", "upload.bin")


def test_example_foundry_get_file(emulator):
    example = load("Files_GetFile_MaximumSet_Gen.json", FOUNDRY_EXAMPLES)
    bearer = {"Authorization": f"Bearer {token(emulator, 'https://ai.azure.com')}"}
    project = emulator.project_url("p1")
    # A fine-tune upload that is not JSON Lines ends in error, which gives the file its status_details.
    created = requests.post(
        f"{project}/files",
        params={"api-version": "v1"},
        headers=bearer,
        files={"file": ("bad.jsonl", b"not json")},
        data={"purpose": "fine-tune"},
    ).json()
    deadline = time.monotonic() + 10
    while (
        file := requests.get(
            f"{project}/files/{created['id']}", params={"api-version": "v1"}, headers=bearer
        ).json()
    )["status"] != "error":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert_shape(file, example["responses"]["200"]["body"])
    # The service's own words (tests/specs/recordings/aoai_finetune_file_validation_error_*.json).
    assert file["status_details"] == "Validation of jsonl file failed: Deserialization of line #0 failed."


# ------------------------------------------------------------------------------ lifecycle and validation
def test_lifecycle_goes_pending_running_processed():
    with Emulator(api_key=API_KEY, processing_seconds=1.0) as emu:
        file = upload(emu, jsonl([CHAT_LINE])).json()
        seen = [file["status"]]
        while seen[-1] not in ("processed", "error"):
            seen.append(
                requests.get(f"{emu.url}/openai/files/{file['id']}", params=V, headers=KEY).json()["status"]
            )
            time.sleep(0.05)
    assert seen[0] == "pending"
    assert "running" in seen
    assert seen[-1] == "processed"


@pytest.mark.parametrize(
    ("purpose", "content", "expected"),
    [
        ("fine-tune", jsonl([CHAT_LINE, {"prompt": 1}]), "Line 2"),
        # A line that is not JSON is told in the recorded words, with the line counted from 0.
        ("fine-tune", jsonl([CHAT_LINE]) + b"{broken\n", "Deserialization of line #1 failed."),
        (
            "fine-tune",
            jsonl([{"messages": [{"role": "robot", "content": "x"}]}]),
            "Line 1: messages[0].role is 'robot'",
        ),
        ("batch", jsonl([BATCH_LINE, {**BATCH_LINE, "custom_id": "r2", "body": "x"}]), "Line 2: body is 'x'"),
        ("batch", jsonl([BATCH_LINE, BATCH_LINE]), "Line 2: custom_id 'r1' is also on line 1"),
        ("fine-tune", jsonl([CHAT_LINE]) + b"\n" + jsonl([CHAT_LINE]), "Deserialization of line #1 failed."),
    ],
)
def test_invalid_jsonl_ends_in_error_naming_the_line(emulator, purpose, content, expected):
    file = upload(emulator, content, purpose=purpose).json()
    final = wait_for_status(emulator, file["id"])
    assert final["status"] == "error"
    assert final["status_details"].startswith("Validation of jsonl file failed: ")
    assert expected in final["status_details"]


def test_valid_batch_file_is_processed_and_other_purposes_are_not_validated(emulator):
    assert (
        wait_for_status(emulator, upload(emulator, jsonl([BATCH_LINE]), purpose="batch").json()["id"])[
            "status"
        ]
        == "processed"
    )
    assert (
        wait_for_status(
            emulator, upload(emulator, b"%PDF-1.7", purpose="assistants", name="a.pdf").json()["id"]
        )["status"]
        == "processed"
    )


def test_import_downloads_the_url_and_keeps_sas_out_of_status(emulator):
    url = emulator.put_blob("train.jsonl", jsonl([CHAT_LINE] * 3))
    file = requests.post(
        f"{emulator.url}/openai/files/import",
        params=V,
        headers=KEY,
        json={"content_url": url, "filename": "train.jsonl", "purpose": "fine-tune"},
    ).json()
    assert file["status"] == "pending"
    final = wait_for_status(emulator, file["id"])
    assert final["status"] == "processed"
    assert final["bytes"] == len(jsonl([CHAT_LINE] * 3))

    missing = emulator.blob_url("missing.jsonl", sas="sv=1&sig=very-secret-signature-value")
    failed = requests.post(
        f"{emulator.url}/openai/files/import",
        params=V,
        headers=KEY,
        json={"content_url": missing, "filename": "m.jsonl", "purpose": "fine-tune"},
    ).json()
    final = wait_for_status(emulator, failed["id"])
    assert final["status"] == "error"
    assert "fileImportFailed" in final["status_details"] and "404" in final["status_details"]
    assert "very-secret-signature-value" not in final["status_details"]


# ------------------------------------------------------------------------------ upload rules
def _new_upload(emu, size, purpose="assistants"):
    return _start_upload(
        emu, {"purpose": purpose, "filename": "x.bin", "bytes": size, "mime_type": "application/octet-stream"}
    ).json()["id"]


def test_upload_rules(emulator):
    upload_id = _new_upload(emulator, 6)
    part = _part(emulator, upload_id, b"abc").json()
    complete = f"{emulator.url}/openai/uploads/{upload_id}/complete"
    # declared size must equal the listed parts
    wrong_size = requests.post(complete, params=V, headers=KEY, json={"part_ids": [part["id"]]})
    assert wrong_size.status_code == 400 and "bytes=6" in wrong_size.json()["error"]["message"]
    second = _part(emulator, upload_id, b"def").json()
    # unknown part ids are rejected
    unknown = requests.post(complete, params=V, headers=KEY, json={"part_ids": [part["id"], "uplprt-nope"]})
    assert unknown.status_code == 400 and unknown.json()["error"]["target"] == "part_ids"
    # md5 is checked
    bad_md5 = requests.post(
        complete, params=V, headers=KEY, json={"part_ids": [part["id"], second["id"]], "md5": "0" * 32}
    )
    assert bad_md5.status_code == 400 and bad_md5.json()["error"]["target"] == "md5"
    # parts are assembled in part_ids order
    done = requests.post(
        complete,
        params=V,
        headers=KEY,
        json={"part_ids": [second["id"], part["id"]], "md5": hashlib.md5(b"defabc").hexdigest()},
    )
    assert done.status_code == 200, done.text
    content = requests.get(
        f"{emulator.url}/openai/files/{done.json()['file']['id']}/content", params=V, headers=KEY
    )
    assert content.content == b"defabc"
    # no parts, complete or cancel after complete
    late = _part(emulator, upload_id, b"x")
    assert late.status_code == 409 and late.json()["error"]["code"] == "unexpectedEntityState"
    assert requests.post(complete, params=V, headers=KEY, json={"part_ids": [part["id"]]}).status_code == 409
    assert (
        requests.post(f"{emulator.url}/openai/uploads/{upload_id}/cancel", params=V, headers=KEY).status_code
        == 409
    )


def test_no_parts_after_cancel_and_uploads_expire():
    with Emulator(api_key=API_KEY, upload_expiry_seconds=0.3) as emu:
        cancelled = _new_upload(emu, 3)
        requests.post(f"{emu.url}/openai/uploads/{cancelled}/cancel", params=V, headers=KEY)
        assert _part(emu, cancelled, b"abc").status_code == 409
        expiring = _new_upload(emu, 3)
        assert _part(emu, expiring, b"abc").status_code == 200
        deadline = time.monotonic() + 5
        while (answer := _part(emu, expiring, b"abc")).status_code == 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert answer.status_code == 409 and "expired" in answer.json()["error"]["message"]


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("request_kwargs", "status", "target"),
    [
        (
            {
                "method": "POST",
                "path": "files",
                "data": {"purpose": "fine-tune"},
                "files": {"other": ("x", b"1")},
            },
            400,
            "file",
        ),
        ({"method": "POST", "path": "files", "files": {"file": ("a.jsonl", b"{}")}}, 400, "purpose"),
        (
            {
                "method": "POST",
                "path": "files",
                "data": {"purpose": "poetry"},
                "files": {"file": ("a.jsonl", b"{}")},
            },
            400,
            "purpose",
        ),
        (
            {
                "method": "POST",
                "path": "files",
                "data": {"purpose": "fine-tune"},
                "files": {"file": ("a.jsonl", b"")},
            },
            400,
            "file",
        ),
        ({"method": "POST", "path": "files", "json": {"purpose": "fine-tune"}}, 415, None),
        (
            {
                "method": "POST",
                "path": "files",
                "data": b"--x\r\ngarbage",
                "headers": {"Content-Type": "multipart/form-data; boundary=x"},
            },
            400,
            None,
        ),
        (
            {
                "method": "POST",
                "path": "files/import",
                "data": "{not json",
                "headers": {"Content-Type": "application/json"},
            },
            400,
            None,
        ),
        (
            {"method": "POST", "path": "files/import", "json": {"filename": "a", "purpose": "fine-tune"}},
            400,
            "content_url",
        ),
        (
            {
                "method": "POST",
                "path": "files/import",
                "json": {"content_url": "ftp://x/y", "filename": "a", "purpose": "fine-tune"},
            },
            400,
            "content_url",
        ),
        (
            {
                "method": "POST",
                "path": "files/import",
                "json": {"content_url": "https://x/y", "filename": "", "purpose": "fine-tune"},
            },
            400,
            "filename",
        ),
        (
            {
                "method": "POST",
                "path": "uploads",
                "json": {"purpose": "fine-tune", "filename": "a", "bytes": "10", "mime_type": "t"},
            },
            400,
            "bytes",
        ),
        (
            {
                "method": "POST",
                "path": "uploads",
                "json": {"purpose": "fine-tune", "filename": "a", "bytes": 10**12, "mime_type": "t"},
            },
            400,
            "bytes",
        ),
        (
            {
                "method": "POST",
                "path": "uploads",
                "json": {"purpose": "fine-tune", "filename": "a", "bytes": 10},
            },
            400,
            "mime_type",
        ),
        ({"method": "POST", "path": "uploads", "json": ["a"]}, 400, None),
        ({"method": "GET", "path": "files/file-unknown"}, 404, "file_id"),
        ({"method": "DELETE", "path": "files/file-unknown"}, 404, "file_id"),
        ({"method": "GET", "path": "files/file-unknown/content"}, 404, "file_id"),
        ({"method": "POST", "path": "uploads/fine-tune-unknown/cancel"}, 404, "upload_id"),
        (
            {"method": "POST", "path": "uploads/fine-tune-unknown/complete", "json": {"part_ids": ["a"]}},
            404,
            "upload_id",
        ),
    ],
)
def test_bad_input_gets_a_4xx_naming_the_problem(emulator, request_kwargs, status, target):
    kwargs = dict(request_kwargs)
    method, path = kwargs.pop("method"), kwargs.pop("path")
    headers = {**KEY, **kwargs.pop("headers", {})}
    answer = requests.request(method, f"{emulator.url}/openai/{path}", params=V, headers=headers, **kwargs)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["code"] in ("invalidPayload", "notFound") and error["message"]
    if target:
        assert error["target"] == target


def test_oversized_file_and_part_are_rejected_and_nothing_is_stored(emulator):
    before = len(requests.get(f"{emulator.url}/openai/files", params=V, headers=KEY).json()["data"])
    too_big = upload(emulator, b"x" * (emulator.limits.max_file_bytes + 1), purpose="assistants")
    assert too_big.status_code == 413 and too_big.json()["error"]["target"] == "file"
    upload_id = _new_upload(emulator, emulator.limits.max_part_bytes + 1)
    part = _part(emulator, upload_id, b"x" * (emulator.limits.max_part_bytes + 1))
    assert part.status_code == 413 and part.json()["error"]["target"] == "data"
    assert len(requests.get(f"{emulator.url}/openai/files", params=V, headers=KEY).json()["data"]) == before
    assert not list((emulator.data_dir / "incoming").iterdir())


# ------------------------------------------------------------------------------ api-version and surfaces
def test_api_versions(emulator):
    files = f"{emulator.url}/openai/files"
    assert requests.get(files, params={"api-version": "2024-06-01"}, headers=KEY).status_code == 200
    assert requests.get(files, params={"api-version": "2023-05-15"}, headers=KEY).status_code == 404
    assert requests.get(files, headers=KEY).status_code == 400
    uploads = f"{emulator.url}/openai/uploads"
    body = {"purpose": "fine-tune", "filename": "a", "bytes": 1, "mime_type": "t"}
    assert (
        requests.post(uploads, params={"api-version": "2024-06-01"}, headers=KEY, json=body).status_code
        == 404
    )
    assert (
        requests.post(
            uploads, params={"api-version": "2025-04-01-preview"}, headers=KEY, json=body
        ).status_code
        == 200
    )
    assert requests.get(f"{emulator.url}/openai/v1/files", headers=KEY).status_code == 200
    assert (
        requests.get(
            f"{emulator.url}/openai/v1/files", params={"api-version": "preview"}, headers=KEY
        ).status_code
        == 200
    )
    assert (
        requests.get(
            f"{emulator.url}/openai/v1/files", params={"api-version": "2024-10-21"}, headers=KEY
        ).status_code
        == 400
    )


def test_v1_surface_shapes(emulator):
    created = requests.post(
        f"{emulator.url}/openai/v1/files",
        headers={"Authorization": f"Bearer {API_KEY}"},
        files={"file": ("a.jsonl", jsonl([CHAT_LINE]))},
        data={"purpose": "fine-tune"},
    )
    assert created.status_code == 200 and "location" not in created.headers
    listing = requests.get(f"{emulator.url}/openai/v1/files", headers=KEY).json()
    assert {"object", "data", "first_id", "last_id", "has_more"} <= set(listing)
    missing = requests.get(f"{emulator.url}/openai/v1/files/file-nope", headers=KEY)
    assert missing.status_code == 404
    assert missing.json()["error"] == {
        "code": "notFound",
        "message": missing.json()["error"]["message"],
        "param": "file_id",
        "type": "error",
    }
    # apim-request-id on every answer; X-Request-ID only from the assistants backend, never about a file-
    # id (tests/specs/recordings/aoai_batch_file_create_get_delete_2025-01-01-preview.json).
    assert missing.headers["apim-request-id"] and "x-request-id" not in missing.headers


# ------------------------------------------------------------------------------ auth
def test_auth_rules(emulator):
    files = f"{emulator.url}/openai/files"
    project_files = f"{emulator.project_url('p1')}/files"
    assert requests.get(files, params=V).status_code == 401
    wrong = requests.get(files, params=V, headers={"api-key": "wrong"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "unauthorized"
    cognitive, foundry = (
        token(emulator, "https://cognitiveservices.azure.com"),
        token(emulator, "https://ai.azure.com"),
    )
    assert requests.get(files, params=V, headers={"Authorization": f"Bearer {cognitive}"}).status_code == 200
    assert requests.get(files, params=V, headers={"Authorization": f"Bearer {foundry}"}).status_code == 401
    assert (
        requests.get(
            project_files, params={"api-version": "v1"}, headers={"Authorization": f"Bearer {foundry}"}
        ).status_code
        == 200
    )
    wrong_audience = requests.get(
        project_files, params={"api-version": "v1"}, headers={"Authorization": f"Bearer {cognitive}"}
    )
    assert wrong_audience.status_code == 401 and set(wrong_audience.json()["error"]) == {
        "code",
        "message",
        "param",
        "type",
    }
    assert requests.get(project_files, params={"api-version": "v1"}, headers=KEY).status_code == 401
    bad_header = requests.get(
        emulator.identity_endpoint,
        params={"resource": "https://ai.azure.com"},
        headers={"X-IDENTITY-HEADER": "x"},
    )
    assert bad_header.status_code == 401


def test_tokens_expire():
    # Expiry is a whole second (expires_on is an integer): 3 s leave at least 2 for the first request.
    with Emulator(api_key=API_KEY, token_lifetime_seconds=3) as emu:
        bearer = {"Authorization": f"Bearer {token(emu, 'https://cognitiveservices.azure.com')}"}
        assert requests.get(f"{emu.url}/openai/files", params=V, headers=bearer).status_code == 200
        deadline = time.monotonic() + 8
        while requests.get(f"{emu.url}/openai/files", params=V, headers=bearer).status_code == 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)


# ------------------------------------------------------------------------------ faults and link
def test_faults_over_the_control_endpoint(emulator):
    control = f"{emulator.url}/_emulator/faults"
    assert (
        requests.post(
            control,
            headers=KEY,
            json={"operation": "files.list", "status": 429, "retry_after": "2", "count": 2},
        ).status_code
        == 200
    )
    assert requests.post(control, headers=KEY, json={"operation": "bogus", "status": 500}).status_code == 400
    for _ in range(2):
        answer = requests.get(f"{emulator.url}/openai/files", params=V, headers=KEY)
        assert answer.status_code == 429 and answer.headers["Retry-After"] == "2"
        assert answer.json()["error"]["code"] == "tooManyRequests"
    assert requests.get(f"{emulator.url}/openai/files", params=V, headers=KEY).status_code == 200
    assert [r.status for r in emulator.faults.calls("files.list")][-3:] == [429, 429, 200]
    requests.delete(control, headers=KEY)
    assert emulator.faults.snapshot()["faults"] == []


def test_drop_and_slow_faults(emulator):
    emulator.faults.inject("files.create", drop=True)
    with pytest.raises(requests.ConnectionError):
        upload(emulator, jsonl([CHAT_LINE]))
    emulator.faults.inject("files.list", delay_seconds=0.3)
    started = time.monotonic()
    assert requests.get(f"{emulator.url}/openai/files", params=V, headers=KEY).status_code == 200
    assert time.monotonic() - started >= 0.3


def test_wan_link_caps_bandwidth(emulator):
    emulator.faults.set_link(bandwidth_bytes_per_second=2 * 1024 * 1024, latency_seconds=0.05)
    started = time.monotonic()
    # An assistants file's create answers 200 (tests/specs/recordings/aoai_assistants_file_*.json).
    assert upload(emulator, b"x" * (1024 * 1024), purpose="assistants").status_code == 200
    assert time.monotonic() - started >= 0.45  # 1 MiB at 2 MiB/s plus latency


def test_forced_status_sequence(emulator):
    file = upload(emulator, jsonl([CHAT_LINE])).json()
    requests.post(
        f"{emulator.url}/_emulator/files/{file['id']}/statuses",
        headers=KEY,
        json={"statuses": ["running", "error"], "status_details": "boom"},
    )
    url = f"{emulator.url}/openai/files/{file['id']}"
    seen = [requests.get(url, params=V, headers=KEY).json() for _ in range(3)]
    assert [f["status"] for f in seen] == ["running", "error", "error"]
    assert seen[-1]["status_details"] == "boom"


# ------------------------------------------------------------------------------ persistence and CLI
def test_data_dir_survives_a_restart(tmp_path):
    with Emulator(api_key=API_KEY, data_dir=tmp_path, processing_seconds=0) as emu:
        file_id = upload(emu, jsonl([CHAT_LINE])).json()["id"]
        assert wait_for_status(emu, file_id)["status"] == "processed"
    with Emulator(api_key=API_KEY, data_dir=tmp_path) as emu:
        assert (
            requests.get(f"{emu.url}/openai/files/{file_id}", params=V, headers=KEY).json()["status"]
            == "processed"
        )
        assert requests.get(
            f"{emu.url}/openai/files/{file_id}/content", params=V, headers=KEY
        ).content == jsonl([CHAT_LINE])


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_command_line_prints_its_url_and_exits_zero_on_signal(tmp_path, stop_signal):
    with emulator_process(data_dir=tmp_path, stderr=subprocess.PIPE) as (process, url):
        assert url.startswith("http://127.0.0.1:")
        assert requests.get(f"{url}/openai/files", params=V, headers=KEY, timeout=10).status_code == 200
        process.send_signal(stop_signal)
        assert process.wait(timeout=20) == 0


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "aoai-emulator"
    assert script.exists()
    assert (
        "usage: aoai-emulator"
        in subprocess.run(
            [str(script), "--help"], check=False, capture_output=True, text=True, env=os.environ
        ).stdout
    )


def test_command_line_names_the_extra_to_install_when_its_server_is_missing(tmp_path):
    """As on Airflow 2.11 without the [emulator] extra: a hint instead of a ModuleNotFoundError trace."""
    (tmp_path / "starlette").mkdir()
    (tmp_path / "starlette" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'starlette'\", name='starlette')\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "airflow_provider_aoai.emulator", "--port", "0"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"},
    )
    assert result.returncode == 2
    assert "pip install 'airflow-provider-aoai[emulator]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_routes_answer_in_the_surface_shape(emulator):
    foundry_import = requests.post(
        f"{emulator.project_url('p')}/files/import", params={"api-version": "v1"}, json={}
    )
    assert foundry_import.status_code in (404, 405)
    assert set(foundry_import.json()["error"]) == {"code", "message", "param", "type"}
    nowhere = requests.get(f"{emulator.url}/openai/nowhere", params=V, headers=KEY)
    assert nowhere.status_code == 404 and nowhere.json()["error"]["code"] == "notFound"
