"""The emulator's own surface over real HTTP: control endpoints behind the api key, limits, malformed input
answered with a 4xx (never a 5xx), no secret in any response, faults that lose an answer, the uploads it
holds, and a clear message when its extra is missing."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import requests

from airflow_provider_aoai.emulator import Emulator
from tests.conftest import API_KEY, CHAT_LINE, jsonl
from tests.emulator_api import KEY, V, add_part, complete, new_upload

CANARY = "canary-secret-4b1d7e0c"


def wait_for_status(emu: Emulator, file_id: str, *, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        file = requests.get(f"{emu.url}/openai/files/{file_id}", params=V, headers=KEY, timeout=10).json()
        if file["status"] in ("processed", "error") or time.monotonic() > deadline:
            return file
        time.sleep(0.05)


def file_count(emu: Emulator) -> int:
    return len(requests.get(f"{emu.url}/openai/files", params=V, headers=KEY, timeout=10).json()["data"])


# ---------------------------------------------------------------------------- control endpoints need the key
CONTROL_CALLS = [
    ("GET", "/_emulator/faults", None),
    ("POST", "/_emulator/faults", {"operation": "files.list", "status": 503}),
    ("DELETE", "/_emulator/faults", None),
    ("POST", "/_emulator/link", {"latency_seconds": 0}),
    ("POST", "/_emulator/files/{file_id}/statuses", {"statuses": ["processed"]}),
    ("GET", "/_emulator/uploads", None),
    ("PUT", "/_emulator/blobs/control.jsonl", b"{}"),
    ("GET", "/_emulator/blobs/control.jsonl", None),
]


@pytest.mark.parametrize(("method", "path", "body"), CONTROL_CALLS)
def test_control_endpoints_need_the_api_key(emulator, method, path, body):
    emulator.put_blob("control.jsonl", b"{}")
    file_id = requests.post(
        f"{emulator.url}/openai/files",
        params=V,
        headers=KEY,
        files={"file": ("a.jsonl", jsonl([CHAT_LINE]))},
        data={"purpose": "fine-tune"},
        timeout=10,
    ).json()["id"]
    url = f"{emulator.url}{path.format(file_id=file_id)}"
    send = {"json": body} if isinstance(body, dict) else {"data": body}

    for headers in ({}, {"api-key": "wrong"}, {"Authorization": "Bearer wrong"}, {"api-key": ""}):
        refused = requests.request(method, url, headers=headers, timeout=10, **send)
        assert refused.status_code == 401, (headers, refused.text)
        assert refused.json()["error"]["code"] == "unauthorized"
    assert emulator.faults.snapshot()["faults"] == []  # nothing was scripted by the refused calls

    for headers in (KEY, {"Authorization": f"Bearer {API_KEY}"}):
        allowed = requests.request(method, url, headers=headers, timeout=10, **send)
        assert allowed.status_code in (200, 201), allowed.text
    emulator.faults.clear()


def test_which_endpoints_stay_open(emulator):
    # Health checks need no secret; the managed-identity endpoint wants its X-IDENTITY-HEADER, and the api
    # key is no substitute for it.
    assert requests.get(f"{emulator.url}/_emulator/health", timeout=10).json() == {"status": "ok"}
    token = requests.get(
        emulator.identity_endpoint, params={"resource": "https://ai.azure.com"}, headers=KEY, timeout=10
    )
    assert token.status_code == 401
    # An emulator without an api key has nothing to check: its control endpoints are open.
    with Emulator() as emu:
        answer = requests.post(
            f"{emu.url}/_emulator/faults", json={"operation": "files.list", "status": 503}, timeout=10
        )
        assert answer.status_code == 200
        assert answer.json()["faults"][0]["status"] == 503
        assert requests.get(f"{emu.url}/_emulator/uploads", timeout=10).json() == {
            "object": "list",
            "data": [],
        }


def test_the_emulator_imports_from_its_own_blobs_that_others_cannot_read(emulator):
    url = emulator.put_blob("own.jsonl", jsonl([CHAT_LINE]))
    assert requests.get(url, timeout=10).status_code == 401
    file = requests.post(
        f"{emulator.url}/openai/files/import",
        params=V,
        headers=KEY,
        json={"content_url": url, "filename": "own.jsonl", "purpose": "fine-tune"},
        timeout=10,
    ).json()
    assert wait_for_status(emulator, file["id"])["status"] == "processed"


# ------------------------------------------------------------------------------ limits
def test_blob_put_is_limited_to_the_file_size_limit(emulator):
    limit = emulator.limits.max_file_bytes
    blob = f"{emulator.url}/_emulator/blobs/big.bin"
    assert requests.put(blob, headers=KEY, data=b"kept", timeout=10).status_code == 201

    declared = requests.put(blob, headers=KEY, data=b"x" * (limit + 1), timeout=30)
    assert declared.status_code == 413, declared.text
    assert declared.json()["error"]["code"] == "invalidPayload"

    def chunked():  # no Content-Length: the limit is found while streaming
        for _ in range(limit // (1024 * 1024) + 1):
            yield b"x" * (1024 * 1024)

    streamed = requests.put(blob, headers=KEY, data=chunked(), timeout=30)
    assert streamed.status_code == 413, streamed.text

    assert requests.get(blob, headers=KEY, timeout=10).content == b"kept"  # the old blob is intact
    assert not [p for p in (emulator.data_dir / "container").iterdir() if p.name.startswith(".")]


# ---------------------------------------------------------------------------- malformed input: 4xx, never 5xx
def deeply_nested(shape: str, depth: int = 100_000) -> str:
    return "[" * depth + "]" * depth if shape == "array" else '{"a":' * depth + "1" + "}" * depth


@pytest.mark.parametrize("shape", ["array", "object"])
@pytest.mark.parametrize(
    ("prefix", "path"),
    [
        ("/openai", "/files/import"),
        ("/openai", "/uploads"),
        ("/openai", "/uploads/fine-tune-x/complete"),
        ("/openai/v1", "/uploads"),
        ("", "/_emulator/faults"),
        ("", "/_emulator/link"),
        ("", "/_emulator/files/file-x/statuses"),
    ],
)
def test_deeply_nested_json_is_a_400(emulator, shape, prefix, path):
    answer = requests.post(
        f"{emulator.url}{prefix}{path}",
        params=V if prefix == "/openai" else None,
        headers={**KEY, "Content-Type": "application/json"},
        data=deeply_nested(shape),
        timeout=30,
    )
    assert answer.status_code == 400, answer.text[:500]
    assert "nested too deeply" in answer.json()["error"]["message"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/_emulator/faults", b"{not json"),
        ("/_emulator/faults", b"[1, 2]"),
        ("/_emulator/faults", b'{"operation": "files.list", "status": "500"}'),
        (
            "/_emulator/faults",
            b'{"operation": "files.list", "status": 503, "retry_after": "1\\r\\nX-Evil: 1"}',
        ),
        ("/_emulator/faults", b'{"operation": "files.list", "delay_seconds": NaN}'),
        ("/_emulator/faults", b'{"operation": "files.list", "delay_seconds": 1e308}'),
        ("/_emulator/faults", b'{"operation": "files.list", "status": 503, "count": true}'),
        ("/_emulator/faults", b'{"operation": "files.list", "after": true, "delay_seconds": 1}'),
        ("/_emulator/faults", b'{"operation": "files.list", "status": 503, "path_contains": 5}'),
        ("/_emulator/faults", b'{"status": 503}'),
        ("/_emulator/link", b"{not json"),
        ("/_emulator/link", b'["x"]'),
        ("/_emulator/link", b'{"bandwidth_bytes_per_second": "fast"}'),
        ("/_emulator/link", b'{"bandwidth_bytes_per_second": -1}'),
        ("/_emulator/link", b'{"latency_seconds": 1e9}'),
        ("/_emulator/link", b'{"latency": 1}'),
        ("/_emulator/files/{file_id}/statuses", b"{not json"),
        ("/_emulator/files/{file_id}/statuses", b'{"statuses": 5}'),
        ("/_emulator/files/{file_id}/statuses", b'{"statuses": "running"}'),
        ("/_emulator/files/{file_id}/statuses", b'{"statuses": ["sleeping"]}'),
        ("/_emulator/files/{file_id}/statuses", b'{"statuses": ["error"], "status_details": {"a": 1}}'),
    ],
)
def test_malformed_control_bodies_are_a_400_and_change_nothing(emulator, path, body):
    file_id = requests.post(
        f"{emulator.url}/openai/files",
        params=V,
        headers=KEY,
        files={"file": ("a.jsonl", jsonl([CHAT_LINE]))},
        data={"purpose": "fine-tune"},
        timeout=10,
    ).json()["id"]
    answer = requests.post(
        f"{emulator.url}{path.format(file_id=file_id)}",
        headers={**KEY, "Content-Type": "application/json"},
        data=body,
        timeout=10,
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "invalidPayload"
    snapshot = emulator.faults.snapshot()
    assert snapshot["faults"] == []
    assert snapshot["link"] == {"bandwidth_bytes_per_second": None, "latency_seconds": 0.0}
    assert requests.get(f"{emulator.url}/openai/files", params=V, headers=KEY, timeout=10).status_code == 200


def test_content_of_a_failed_import_is_a_409_not_a_500(emulator):
    file = requests.post(
        f"{emulator.url}/openai/files/import",
        params=V,
        headers=KEY,
        json={
            "content_url": emulator.blob_url("missing.jsonl"),
            "filename": "m.jsonl",
            "purpose": "fine-tune",
        },
        timeout=10,
    ).json()
    assert wait_for_status(emulator, file["id"])["status"] == "error"

    answer = requests.get(
        f"{emulator.url}/openai/files/{file['id']}/content", params=V, headers=KEY, timeout=10
    )
    assert answer.status_code == 409, answer.text
    assert answer.json()["error"]["code"] == "unexpectedEntityState"


def test_a_malformed_token_request_is_a_400():
    with Emulator(tls=True) as emu:
        answer = requests.post(
            f"{emu.url}/tenant-1/oauth2/v2.0/token",
            headers={"Content-Type": "multipart/form-data; boundary=x"},
            data=b"--x\r\nContent-Disposition: form-data\r\n\r\n" + b"y" * 10,
            verify=str(emu.ca_cert_path),
            timeout=10,
        )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "invalid_request"


# ------------------------------------------------------------------------------ no secret in a response
def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(
    "content_url",
    [
        f"http://user:{CANARY}@127.0.0.1:{_closed_port()}/data.jsonl?sv=1&sig={CANARY}",
        f"http://127.0.0.1:{_closed_port()}/data.jsonl?sv=1&sig={CANARY}",
        f"http://[::1:{CANARY}/x?sig={CANARY}",
    ],
    ids=["userinfo-and-sas", "sas", "invalid-url"],
)
def test_a_failed_import_keeps_the_url_secrets_and_the_raw_exception_out(emulator, content_url):
    file = requests.post(
        f"{emulator.url}/openai/files/import",
        params=V,
        headers=KEY,
        json={"content_url": content_url, "filename": "d.jsonl", "purpose": "fine-tune"},
        timeout=10,
    ).json()
    assert wait_for_status(emulator, file["id"])["status"] == "error"

    raw = requests.get(f"{emulator.url}/openai/files/{file['id']}", params=V, headers=KEY, timeout=10).text
    assert "fileImportFailed" in raw
    assert CANARY not in raw
    for exception_text in (
        "Max retries",
        "HTTPConnectionPool",
        "Errno",
        "NewConnectionError",
        "Invalid IPv6",
    ):
        assert exception_text not in raw


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("GET", f"/openai/files/x%3Fsig%3D{CANARY}", {}),
        ("GET", f"/openai/files/{API_KEY}", {}),
        ("POST", f"/openai/uploads/{API_KEY}/cancel", {}),
        ("GET", f"/openai/nowhere%3Fsig%3D{CANARY}", {}),
        ("GET", f"/openai/v1/files/{API_KEY}", {}),
        ("GET", "/openai/files", {"params": {"api-version": f"x?sig={CANARY}"}}),
        (
            "POST",
            "/openai/files",
            {"files": {"file": ("a.jsonl", b"{}")}, "data": {"purpose": f"p?sig={CANARY}"}},
        ),
        ("POST", "/openai/files/import", {"data": "x", "headers": {"Content-Type": f"text/x?sig={CANARY}"}}),
        ("POST", "/_emulator/faults", {"json": {"operation": "files.list", API_KEY: 1}}),
        ("GET", f"/_emulator/blobs/{API_KEY}.jsonl", {}),
    ],
)
def test_error_messages_that_echo_input_carry_no_secret(emulator, method, path, kwargs):
    kwargs = dict(kwargs)
    params = kwargs.pop("params", V)
    headers = {**KEY, **kwargs.pop("headers", {})}
    url = f"{emulator.url}{path}"
    with requests.Session() as session:
        prepared = session.prepare_request(
            requests.Request(method, url, params=params, headers=headers, **kwargs)
        )
        answer = session.send(prepared, timeout=10)

    assert 400 <= answer.status_code < 500, answer.text
    assert answer.json()["error"]["message"]
    assert CANARY not in answer.text
    assert API_KEY not in answer.text
    log = requests.get(f"{emulator.url}/_emulator/faults", headers=KEY, timeout=10).text
    assert CANARY not in log
    assert API_KEY not in log


# ------------------------------------------------------------------------------ faults that lose an answer
def test_a_fault_after_the_request_acts_then_loses_the_answer(emulator):
    first, second = jsonl([CHAT_LINE]), jsonl([CHAT_LINE] * 2)
    upload_id = new_upload(emulator, len(first + second))
    parts = [add_part(emulator, upload_id, data).json()["id"] for data in (first, second)]
    emulator.faults.inject("uploads.complete", status=500, after=True)

    lost = complete(emulator, upload_id, parts)
    assert lost.status_code == 500
    assert lost.json()["error"]["code"] == "internalFailure"
    upload = emulator.store.get_upload(upload_id)
    assert upload["status"] == "completed"  # the service acted
    assert emulator.faults.calls("uploads.complete")[-1].fault == "status 500 after 200"

    again = complete(emulator, upload_id, parts)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "unexpectedEntityState"
    content = requests.get(
        f"{emulator.url}/openai/files/{upload['file']['id']}/content", params=V, headers=KEY, timeout=10
    )
    assert content.content == first + second


def test_a_dropped_answer_after_a_create_leaves_the_file_behind(emulator):
    before = file_count(emulator)
    emulator.faults.inject("files.create", drop=True, after=True)
    with pytest.raises(requests.ConnectionError):
        requests.post(
            f"{emulator.url}/openai/files",
            params=V,
            headers=KEY,
            files={"file": ("a.jsonl", jsonl([CHAT_LINE]))},
            data={"purpose": "fine-tune"},
            timeout=10,
        )
    assert file_count(emulator) == before + 1
    assert emulator.faults.calls("files.create")[-1].fault == "drop after 201"


def test_faults_match_a_path_substring_and_are_scripted_over_http_too(emulator):
    target, other = new_upload(emulator, 3), new_upload(emulator, 3)
    scripted = requests.post(
        f"{emulator.url}/_emulator/faults",
        headers=KEY,
        json={
            "operation": "uploads.parts",
            "status": 503,
            "after": True,
            "path_contains": target,
            "retry_after_ms": 5,
        },
        timeout=10,
    )
    assert scripted.status_code == 200, scripted.text
    assert scripted.json()["faults"][0]["after"] is True

    assert add_part(emulator, other, b"abc").status_code == 200  # another upload's parts are not hit
    assert emulator.faults.snapshot()["faults"]  # still waiting for its path
    hit = add_part(emulator, target, b"abc")
    assert hit.status_code == 503 and hit.headers["retry-after-ms"] == "5"
    held = {upload["id"]: upload for upload in emulator.store.list_uploads()}
    assert len(held[target]["part_ids"]) == 1  # received all the same
    assert emulator.faults.snapshot()["faults"] == []


def test_a_python_fault_matches_a_path_substring(emulator):
    target, other = new_upload(emulator, 3), new_upload(emulator, 3)
    emulator.faults.inject("*", status=429, path_contains=f"{other}/cancel")
    cancel = f"{emulator.url}/openai/uploads/{{}}/cancel"
    assert requests.post(cancel.format(target), params=V, headers=KEY, timeout=10).status_code == 200
    assert requests.post(cancel.format(other), params=V, headers=KEY, timeout=10).status_code == 429
    assert emulator.store.get_upload(other)["status"] == "pending"


# ------------------------------------------------------------------------ what it holds, for other processes
def test_the_uploads_it_holds_are_listed_with_their_parts_and_file(emulator):
    data = jsonl([CHAT_LINE] * 3)
    upload_id = new_upload(emulator, len(data), filename="listed.jsonl")
    parts = [add_part(emulator, upload_id, chunk).json()["id"] for chunk in (data[:10], data[10:])]
    assert add_part(emulator, upload_id, b"unused").status_code == 200
    done = complete(emulator, upload_id, parts)
    assert done.status_code == 200, done.text
    pending = new_upload(emulator, 5)

    listed = requests.get(f"{emulator.url}/_emulator/uploads", headers=KEY, timeout=10).json()
    assert listed["object"] == "list"
    by_id = {u["id"]: u for u in listed["data"]}
    completed = by_id[upload_id]
    assert completed["status"] == "completed"
    assert completed["filename"] == "listed.jsonl" and completed["purpose"] == "fine-tune"
    assert completed["bytes"] == len(data)
    assert completed["part_ids"][:2] == parts and len(completed["part_ids"]) == 3
    assert completed["file_id"] == done.json()["file"]["id"]
    assert isinstance(completed["created_at"], int)
    assert by_id[pending]["status"] == "pending" and by_id[pending]["part_ids"] == []
    assert by_id[pending]["file_id"] is None
    assert [u["id"] for u in listed["data"]].index(upload_id) < [u["id"] for u in listed["data"]].index(
        pending
    )
    assert emulator.store.list_uploads() == listed["data"]


def test_the_upload_list_survives_a_restart(tmp_path):
    with Emulator(api_key=API_KEY, data_dir=tmp_path) as emu:
        upload_id = new_upload(emu, 3)
        part = add_part(emu, upload_id, b"abc").json()["id"]
    with Emulator(api_key=API_KEY, data_dir=tmp_path) as emu:
        (listed,) = emu.store.list_uploads()
    assert (listed["id"], listed["part_ids"]) == (upload_id, [part])


# ------------------------------------------------------------------------------ the Python handle
def test_put_blob_needs_a_started_emulator_and_a_blob_name(emulator):
    with pytest.raises(RuntimeError, match="not started"):
        Emulator().put_blob("a.jsonl", b"x")
    for name in ("", "a/b", ".hidden", "a\x00b", "x" * 256):
        with pytest.raises(ValueError, match="name"):
            emulator.put_blob(name, b"x")


# ------------------------------------------------------------------------------ without the [emulator] extra
BLOCK_EXTRA = textwrap.dedent(
    """
    import sys

    class BlockEmulatorExtra:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("starlette", "uvicorn", "python_multipart", "multipart"):
                raise ImportError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, BlockEmulatorExtra())
    """
)


@pytest.mark.parametrize(
    "entry",
    [
        "from airflow_provider_aoai.emulator.__main__ import main\nsys.exit(main(['--port', '0']))",
        "import runpy\nrunpy.run_module('airflow_provider_aoai.emulator', run_name='__main__')",
    ],
    ids=["aoai-emulator", "python-m"],
)
def test_without_the_extra_the_command_names_it_and_exits_2(entry):
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_EXTRA + entry], check=False, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "pip install 'airflow-provider-aoai[emulator]'" in lines[0]
    assert "starlette" in lines[0] and "Traceback" not in result.stderr


def test_without_the_extra_the_python_handle_names_it():
    script = BLOCK_EXTRA + textwrap.dedent(
        """
        from airflow_provider_aoai.emulator import Emulator
        try:
            Emulator().start()
        except ImportError as exc:
            print(exc)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=60
    )
    assert "pip install 'airflow-provider-aoai[emulator]'" in result.stdout, result.stderr


# ------------------------------------------------------------------------------ the README's reference runs
def json_documents(text: str) -> list:
    """The JSON documents printed one after another (curl prints no newline after its body)."""
    decoder, documents, index = json.JSONDecoder(), [], 0
    while index < len(text.rstrip()):
        document, index = decoder.raw_decode(text, index)
        documents.append(document)
        while index < len(text) and text[index].isspace():
            index += 1
    return documents


def test_the_readme_control_examples_run(emulator, tmp_path):
    """The control endpoints' shell example of docs/emulator.md, run as written."""
    page = (Path(__file__).resolve().parents[1] / "docs" / "emulator.md").read_text()
    section = page.split("\n## Reference\n", 1)[1]
    script = section.split("```bash\n", 1)[1].split("```", 1)[0]
    upload_id = new_upload(emulator, 3, filename="readme.jsonl")
    part = add_part(emulator, upload_id, b"abc").json()["id"]

    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ["PATH"], "AOAI_URL": emulator.url, "AOAI_KEY": API_KEY},
    )

    assert result.returncode == 0, result.stderr
    scripted, *listed = json_documents(result.stdout)
    assert scripted["faults"][0] == {**scripted["faults"][0], "operation": "uploads.complete", "after": True}
    assert {"id": upload_id, "status": "pending", "part_ids": [part], "file_id": None} in listed
    assert emulator.faults.snapshot()["faults"] == []
