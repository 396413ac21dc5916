"""The emulator answers as the live service's recordings show, over real HTTP.

Each test names the recording it follows (``tests/specs/recordings/<file>``; provenance in
``tests/specs/SOURCES.md``). Where the recordings are silent, the emulator follows a decision of ours, listed
in ``docs/emulator.md`` ("Which source each behaviour follows"); the tests of those say so.
"""

from __future__ import annotations

import gzip
import json
import re
import time

import pytest
import requests

from airflow_provider_aoai.emulator import Emulator
from airflow_provider_aoai.emulator.files import content_disposition
from tests.conftest import API_KEY, BATCH_LINE, CHAT_LINE, jsonl
from tests.emulator_api import KEY, ai_token

DATA_PLANE_V = {"api-version": "2025-01-01-preview"}  # the recorded data plane version
PROJECT_V = {"api-version": "2025-11-15-preview"}  # the recorded project route version
FILE_ID = re.compile(r"file-[0-9a-f]{32}")
ASSISTANT_ID = re.compile(r"assistant-[A-Za-z0-9]{22}")
UPLOAD_ID = re.compile(r"assistant-upload_[A-Za-z0-9]{24}")
ASSISTANTS_KEYS = [
    "object",
    "id",
    "purpose",
    "filename",
    "bytes",
    "created_at",
    "expires_at",
    "status",
    "status_details",
]
AZURE_FILES_KEYS = ["status", "bytes", "purpose", "filename", "id", "created_at", "object"]
NOT_JSON = b"not json\n"
VALIDATION_FAILED = "Validation of jsonl file failed: Deserialization of line #0 failed."


class Door:
    """One surface of an emulator: where its files are, what it is sent."""

    def __init__(self, emu: Emulator, surface: str) -> None:
        self.emu, self.surface = emu, surface
        if surface == "data_plane":
            self.files, self.params, self.headers = f"{emu.url}/openai/files", DATA_PLANE_V, KEY
        elif surface == "v1":
            self.files, self.params, self.headers = f"{emu.url}/openai/v1/files", {}, KEY
        elif surface == "foundry":
            self.files, self.params = f"{emu.project_url('fidelity')}/files", {"api-version": "v1"}
            self.headers = ai_token(emu)
        else:
            self.files, self.params = f"{emu.project_url('fidelity')}/openai/files", PROJECT_V
            self.headers = ai_token(emu)

    def create(
        self, content: bytes, purpose: str, name: str = "data.jsonl", **fields: str
    ) -> requests.Response:
        return requests.post(
            self.files,
            params=self.params,
            headers=self.headers,
            files={"file": (name, content)},
            data={"purpose": purpose, **fields},
            timeout=10,
        )

    def get(self, file_id: str = "", suffix: str = "", **kwargs) -> requests.Response:
        url = f"{self.files}/{file_id}{suffix}" if file_id else self.files
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return requests.get(
            url, params={**self.params, **kwargs.pop("params", {})}, headers=headers, timeout=10, **kwargs
        )

    def delete(self, file_id: str) -> requests.Response:
        return requests.delete(
            f"{self.files}/{file_id}", params=self.params, headers=self.headers, timeout=10
        )


@pytest.fixture
def data_plane(emulator) -> Door:
    return Door(emulator, "data_plane")


@pytest.fixture
def project(emulator) -> Door:
    """A project's OpenAI route, ``{project endpoint}/openai``."""
    return Door(emulator, "foundry_openai")


def content_for(purpose: str) -> bytes:
    return jsonl([BATCH_LINE] if purpose == "batch" else [CHAT_LINE])


# ------------------------------------------------------------------------------ ids
@pytest.mark.parametrize(
    ("surface", "purpose", "shape"),
    [
        ("data_plane", "fine-tune", FILE_ID),  # aoai_finetune_file_validation_error_*
        ("data_plane", "batch", FILE_ID),  # aoai_batch_file_create_get_delete_*
        ("data_plane", "assistants", ASSISTANT_ID),  # aoai_assistants_file_create_delete_404_*
        ("foundry_openai", "fine-tune", FILE_ID),  # foundry_project_files_crud_*
        ("foundry_openai", "assistants", ASSISTANT_ID),  # foundry_project_assistants_file_create_get_*
        # The other purposes of the assistants backend (no recording of their own)
        ("foundry_openai", "vision", ASSISTANT_ID),
        ("foundry_openai", "user_data", ASSISTANT_ID),
        ("foundry_openai", "evals", ASSISTANT_ID),
        ("v1", "evals", ASSISTANT_ID),
    ],
)
def test_a_files_id_is_minted_by_the_backend_of_its_purpose(emulator, surface, purpose, shape):
    created = Door(emulator, surface).create(content_for(purpose), purpose)
    assert created.status_code in (200, 201), created.text
    assert shape.fullmatch(created.json()["id"]), created.json()["id"]


def test_an_upload_is_an_assistants_upload_that_expires_an_hour_after_its_creation(emulator):
    """aoai_upload_create_cancel_async_2024-08-01-preview.json and its _sync twin: 200 without Location,
    ``assistant-upload_<24>``, ``expires_at = created_at + 3600``; cancel answers the same object."""
    uploads = f"{emulator.url}/openai/uploads"
    version = {"api-version": "2024-08-01-preview"}
    body = {"filename": "large_file.txt", "purpose": "assistants", "bytes": 305, "mime_type": "text/plain"}
    created = requests.post(uploads, params=version, headers=KEY, json=body, timeout=10)

    assert created.status_code == 200, created.text
    assert "location" not in created.headers
    upload = created.json()
    assert UPLOAD_ID.fullmatch(upload["id"])
    assert upload["expires_at"] == upload["created_at"] + 3600
    assert {k: upload[k] for k in ("object", "bytes", "filename", "purpose", "status")} == {
        "object": "upload",
        "bytes": 305,
        "filename": "large_file.txt",
        "purpose": "assistants",
        "status": "pending",
    }
    cancelled = requests.post(f"{uploads}/{upload['id']}/cancel", params=version, headers=KEY, timeout=10)
    assert cancelled.status_code == 200
    assert cancelled.json() == {**upload, "status": "cancelled"}


# ------------------------------------------------------------------------------ create answers
@pytest.mark.parametrize("purpose", ["fine-tune", "batch"])
def test_a_fine_tune_or_batch_create_answers_201_with_its_location_on_the_data_plane(data_plane, purpose):
    """aoai_batch_file_create_get_delete_* and aoai_finetune_file_validation_error_*: 201, Location
    ``{resource}/openai/files/{id}?api-version=<the request's>``."""
    created = data_plane.create(content_for(purpose), purpose)
    assert created.status_code == 201, created.text
    file_id = created.json()["id"]
    assert (
        created.headers["location"]
        == f"{data_plane.emu.url}/openai/files/{file_id}?api-version=2025-01-01-preview"
    )
    assert requests.get(created.headers["location"], headers=KEY, timeout=10).json()["id"] == file_id


def test_a_fine_tune_create_on_the_project_route_locates_the_file_on_the_resource(project):
    """foundry_project_finetune_file_create_get_dotnet_*: 201 whose Location is the resource's data plane
    URL at api-version 2025-03-01-preview (the Python recordings sanitize it)."""
    created = project.create(content_for("fine-tune"), "fine-tune")
    assert created.status_code == 201, created.text
    file_id = created.json()["id"]
    location = f"{project.emu.url}/openai/files/{file_id}?api-version=2025-03-01-preview"
    assert created.headers["location"] == location
    assert requests.get(location, headers=KEY, timeout=10).json()["id"] == file_id


@pytest.mark.parametrize("surface", ["data_plane", "foundry_openai"])
def test_an_assistants_create_answers_200_without_location_and_processed(emulator, surface):
    """aoai_assistants_file_create_delete_404_* (data plane) and foundry_project_assistants_file_create_get_*
    (project route): 200, no Location, ``processed`` in the create answer."""
    created = Door(emulator, surface).create(b"hello, world", "assistants", name="hello.txt")
    assert created.status_code == 200, created.text
    assert "location" not in created.headers
    assert created.json()["status"] == "processed"


@pytest.mark.parametrize("surface", ["v1", "foundry"])
def test_v1_and_the_agents_route_answer_every_create_200(emulator, surface):
    """Our decision where the recordings are silent: these surfaces keep their spec's 200 (no Location)."""
    door = Door(emulator, surface)
    for purpose in ("fine-tune", "batch", "assistants"):
        created = door.create(content_for(purpose), purpose)
        assert created.status_code == 200, created.text
        assert "location" not in created.headers


# ------------------------------------------------------------------------------ judged at create
def test_a_batch_file_is_judged_in_its_create_answer(data_plane):
    """aoai_batch_file_create_get_delete_*: a 32-byte batch file came back ``processed`` from create. The
    emulator judges every batch file so, whatever its size (our decision), with the verdict its GET keeps."""
    good = data_plane.create(jsonl([BATCH_LINE]), "batch")
    assert good.json()["status"] == "processed"
    bad = data_plane.create(jsonl([BATCH_LINE, BATCH_LINE]), "batch")  # a custom_id twice
    assert bad.status_code == 201
    judged = bad.json()
    assert judged["status"] == "error"
    assert judged["status_details"].startswith("Validation of jsonl file failed: ")
    assert data_plane.get(judged["id"]).json() == judged


def test_a_fine_tune_file_goes_pending_running_processed():
    """foundry_project_files_crud_*: the create answers ``pending``, then GETs see ``pending``, ``running``,
    ``processed``."""
    with Emulator(api_key=API_KEY, processing_seconds=1.0) as emu:
        door = Door(emu, "foundry_openai")
        created = door.create(content_for("fine-tune"), "fine-tune")
        seen = [created.json()["status"]]
        deadline = time.monotonic() + 10
        while seen[-1] != "processed":
            assert time.monotonic() < deadline, seen
            seen.append(door.get(created.json()["id"]).json()["status"])
            time.sleep(0.05)
    assert seen[0] == "pending"
    assert [status for i, status in enumerate(seen) if i == 0 or status != seen[i - 1]] == [
        "pending",
        "running",
        "processed",
    ]


@pytest.mark.parametrize("surface", ["data_plane", "foundry_openai"])
def test_a_fine_tune_file_whose_first_line_is_not_json_fails_in_the_services_words(emulator, surface):
    """aoai_finetune_file_validation_error_*: ``status_details`` verbatim."""
    door = Door(emulator, surface)
    created = door.create(NOT_JSON, "fine-tune").json()
    assert created["status"] == "pending"
    deadline = time.monotonic() + 10
    while (file := door.get(created["id"]).json())["status"] != "error":
        assert time.monotonic() < deadline, file
        time.sleep(0.05)
    assert file["status_details"] == VALIDATION_FAILED


# ------------------------------------------------------------------------------ body shapes
def test_an_assistants_file_has_every_key_with_null_for_what_is_not_set(project):
    """foundry_project_assistants_file_create_get_dotnet_*: ``expires_at`` and ``status_details`` null."""
    created = project.create(b"hello, world", "assistants", name="hello.txt").json()
    assert list(created) == ASSISTANTS_KEYS
    assert created["expires_at"] is None and created["status_details"] is None
    assert list(project.get(created["id"]).json()) == ASSISTANTS_KEYS


def test_a_fine_tune_file_has_no_expiry_or_details_keys_unless_set(data_plane, emulator):
    """aoai_batch_file_create_get_delete_* (no ``status_details``, no ``expires_at``) and
    aoai_finetune_file_validation_error_* (``status_details`` first once failed)."""
    created = data_plane.create(content_for("fine-tune"), "fine-tune").json()
    assert list(created) == AZURE_FILES_KEYS
    failed = data_plane.create(NOT_JSON, "fine-tune").json()
    deadline = time.monotonic() + 10
    while (file := data_plane.get(failed["id"]).json())["status"] != "error":
        assert time.monotonic() < deadline, file
        time.sleep(0.05)
    assert list(file) == ["status_details", *AZURE_FILES_KEYS]
    # expires_at only once an expiry was set (where its place is, the recordings do not show)
    expiring = requests.post(
        f"{emulator.url}/openai/files",
        params={"api-version": "2025-04-01-preview"},
        headers=KEY,
        files={"file": ("e.jsonl", content_for("fine-tune"))},
        data={
            "purpose": "fine-tune",
            "expires_after[anchor]": "created_at",
            "expires_after[seconds]": "3600",
        },
        timeout=10,
    ).json()
    assert expiring["expires_at"] == expiring["created_at"] + 3600
    assert set(expiring) == {*AZURE_FILES_KEYS, "expires_at"}


def test_the_project_route_lists_every_file_in_the_assistants_shape(project):
    """foundry_project_files_crud_*: its list shows a fine-tune file with ``expires_at`` and
    ``status_details`` null, beside the assistants backend's files."""
    file_id = project.create(content_for("fine-tune"), "fine-tune").json()["id"]
    # Plain: urllib3 2.0.0 (the lowest bound CI runs) hands requests only the first 10 KiB of a gzip body
    # this long; the provider's own client reads it whole there (the gzip tests read the raw bytes).
    listed = project.get(params={"limit": "100"}, headers={"Accept-Encoding": "identity"}).json()
    mine = next(item for item in listed["data"] if item["id"] == file_id)
    assert list(mine) == ASSISTANTS_KEYS
    assert mine["expires_at"] is None and mine["status_details"] is None


# ------------------------------------------------------------------------------ request ids
def test_x_request_id_comes_only_from_the_assistants_backend(emulator, data_plane):
    """aoai_batch_file_create_get_delete_* (none on a file- create, GET, DELETE),
    aoai_assistants_file_create_delete_404_* (on every answer about an assistant- file, the 404 included),
    aoai_list_files_dotnet_* (on the list), aoai_upload_create_cancel_* (on uploads); apim-request-id on
    every answer."""
    fine_tune = data_plane.create(content_for("fine-tune"), "fine-tune")
    assistants = data_plane.create(b"notes", "assistants", name="notes.txt")
    upload = requests.post(
        f"{emulator.url}/openai/uploads",
        params={"api-version": "2024-10-21"},
        headers=KEY,
        json={"filename": "u.txt", "purpose": "assistants", "bytes": 3, "mime_type": "text/plain"},
        timeout=10,
    )
    file_id, assistant_id = fine_tune.json()["id"], assistants.json()["id"]
    without = [
        fine_tune,
        data_plane.get(file_id),
        data_plane.get(file_id, "/content"),
        data_plane.delete(file_id),
        data_plane.get("file-00000000000000000000000000000000"),
    ]
    with_it = [
        assistants,
        data_plane.get(assistant_id),
        data_plane.get(assistant_id, "/content"),
        data_plane.get(),
        upload,
        data_plane.delete(assistant_id),
        data_plane.delete(assistant_id),  # the 404
    ]
    for answer in without + with_it:
        assert re.fullmatch(r"[0-9a-f-]{36}", answer.headers["apim-request-id"])
    assert [("x-request-id" in a.headers) for a in without] == [False] * len(without)
    assert [
        re.fullmatch(r"[0-9a-f-]{36}", a.headers.get("x-request-id", "")) is not None for a in with_it
    ] == [True] * len(with_it)
    assert with_it[-1].status_code == 404


def test_the_project_routes_x_request_id_is_32_hex_digits(project):
    """foundry_project_files_crud_*: ``X-Request-ID: 34e37775f82cbf228f83ede7ea331aae`` on its list."""
    assert re.fullmatch(r"[0-9a-f]{32}", project.get().headers["x-request-id"])


# ------------------------------------------------------------------------------ deleting twice
@pytest.mark.parametrize("surface", ["data_plane", "foundry_openai"])
def test_deleting_a_deleted_fine_tune_or_batch_file_answers_deleted_false(emulator, surface):
    """aoai_batch_file_create_get_delete_*: the second DELETE answers 200 ``"deleted": false``."""
    door = Door(emulator, surface)
    file_id = door.create(content_for("batch"), "batch").json()["id"]
    assert door.delete(file_id).json() == {"object": "file", "deleted": True, "id": file_id}
    again = door.delete(file_id)
    assert again.status_code == 200
    assert again.json() == {"object": "file", "deleted": False, "id": file_id}


@pytest.mark.parametrize(
    ("surface", "error"),
    [
        # The recording's body is OpenAI's error object; the data plane keeps its ErrorResponse shape.
        ("data_plane", {"code": "notFound", "message": "No such File object: {id}", "target": "id"}),
        (
            "foundry_openai",
            {
                "message": "No such File object: {id}",
                "type": "invalid_request_error",
                "param": "id",
                "code": None,
            },
        ),
    ],
)
def test_deleting_a_deleted_assistants_file_is_a_404_in_the_services_words(emulator, surface, error):
    """aoai_assistants_file_create_delete_404_*: ``No such File object: <id>``."""
    door = Door(emulator, surface)
    file_id = door.create(b"delete me", "assistants", name="d.txt").json()["id"]
    assert door.delete(file_id).json()["deleted"] is True
    again = door.delete(file_id)
    assert again.status_code == 404
    assert again.json() == {
        "error": {k: v.format(id=file_id) if isinstance(v, str) else v for k, v in error.items()}
    }


# ------------------------------------------------------------------------------ gzip and downloads
def test_the_project_route_gzips_its_json_reads_when_asked(project):
    """foundry_project_files_crud_*: GET, list and DELETE answers ``Content-Encoding: gzip`` with
    ``Vary: Accept-Encoding`` (the openai SDK accepts gzip); not the create answer, not the download."""
    created = project.create(content_for("fine-tune"), "fine-tune", name="test_file.jsonl")
    assert "content-encoding" not in created.headers
    file_id = created.json()["id"]
    for answer in (
        project.get(file_id, stream=True),
        project.get(stream=True),
        requests.delete(
            f"{project.files}/{file_id}",
            params=project.params,
            headers=project.headers,
            stream=True,
            timeout=10,
        ),
    ):
        assert answer.headers["content-encoding"] == "gzip"
        assert answer.headers["vary"] == "Accept-Encoding"
        raw = answer.raw.read(decode_content=False)
        assert json.loads(gzip.decompress(raw))["object"] in ("file", "list")


def test_the_project_route_answers_plain_json_to_a_client_without_gzip(project):
    """foundry_project_finetune_file_create_get_dotnet_*: the .NET client sends no Accept-Encoding; the GET
    comes plain, still with ``Vary: Accept-Encoding``."""
    file_id = project.create(content_for("fine-tune"), "fine-tune").json()["id"]
    answer = project.get(file_id, headers={"Accept-Encoding": "identity"}, stream=True)
    assert "content-encoding" not in answer.headers
    assert answer.headers["vary"] == "Accept-Encoding"
    assert json.loads(answer.raw.read(decode_content=False))["id"] == file_id


def test_the_project_routes_download_is_an_attachment_never_compressed(project):
    """foundry_project_files_crud_*: ``Content-Disposition: attachment; filename=test_file.jsonl;
    filename*=UTF-8''test_file.jsonl``, ``application/octet-stream``, no Content-Encoding."""
    content = content_for("fine-tune")
    file_id = project.create(content, "fine-tune", name="test_file.jsonl").json()["id"]
    answer = project.get(file_id, "/content", stream=True)
    assert answer.status_code == 200
    assert answer.headers["content-disposition"] == (
        "attachment; filename=test_file.jsonl; filename*=UTF-8''test_file.jsonl"
    )
    assert answer.headers["content-type"] == "application/octet-stream"
    assert "content-encoding" not in answer.headers
    assert answer.raw.read(decode_content=False) == content


def test_a_download_name_that_is_not_a_token_is_quoted_and_percent_encoded(project):
    """Our decision (the recording shows a plain name only): RFC 6266's two forms, ASCII and UTF-8."""
    file_id = project.create(b"x", "assistants", name="report Q1 é.txt").json()["id"]
    disposition = project.get(file_id, "/content").headers["content-disposition"]
    assert (
        disposition == "attachment; filename=\"report Q1 _.txt\"; filename*=UTF-8''report%20Q1%20%C3%A9.txt"
    )
    assert content_disposition('a "b"\\c') == (
        "attachment; filename=\"a _b__c\"; filename*=UTF-8''a%20%22b%22%5Cc"
    )


# ------------------------------------------------------------------------------ the project's OpenAI route
def test_the_project_route_pages_its_list(emulator):
    """foundry_project_files_crud_*: ``has_more``, ``first_id``, ``last_id`` on a list without ``limit``,
    newest first. How many per page (20) is our decision; ``after``, ``limit`` and ``order`` are OpenAI's."""
    with Emulator(api_key=API_KEY, processing_seconds=0) as emu:
        door = Door(emu, "foundry_openai")
        ids = [door.create(b"x", "assistants", name=f"{n}.txt").json()["id"] for n in range(23)]
        first = door.get().json()
        assert list(first) == ["object", "data", "has_more", "first_id", "last_id"]
        assert [f["id"] for f in first["data"]] == ids[::-1][:20]
        assert (first["has_more"], first["first_id"], first["last_id"]) == (True, ids[-1], ids[3])
        rest = door.get(params={"after": first["last_id"]}).json()
        assert [f["id"] for f in rest["data"]] == ids[2::-1] and rest["has_more"] is False
        oldest = door.get(params={"order": "asc", "limit": "2"}).json()
        assert [f["id"] for f in oldest["data"]] == ids[:2] and oldest["has_more"] is True
        assert door.get(params={"order": "sideways"}).status_code == 400


@pytest.mark.parametrize(
    ("version", "status"),
    [
        ("2025-11-15-preview", 200),
        ("2025-12-01-preview", 200),
        ("2026-04-01-preview", 200),
        ("2025-11-01-preview", 404),
        ("2025-02-30-preview", 404),
        ("2025-11-15", 404),
        ("v1", 404),
        ("2024-10-21", 404),
    ],
)
def test_the_project_route_serves_2025_11_15_preview_and_later_previews(emulator, version, status):
    """The recorded version, and (our decision) any later dated preview; everything else is unknown there,
    answered as the data plane answers an api-version it does not serve."""
    door = Door(emulator, "foundry_openai")
    answer = door.get(params={"api-version": version})
    assert answer.status_code == status, answer.text
    if status != 200:
        assert answer.json()["error"]["param"] == "api-version"


def test_the_project_route_takes_only_entra_tokens_for_ai_azure_com_and_answers_openai_errors(emulator):
    door = Door(emulator, "foundry_openai")
    cognitive = requests.get(
        emulator.identity_endpoint,
        params={"resource": "https://cognitiveservices.azure.com"},
        headers={"X-IDENTITY-HEADER": emulator.identity.header_secret},
        timeout=10,
    ).json()["access_token"]
    for headers in (
        KEY,
        {"Authorization": f"Bearer {API_KEY}"},
        {"Authorization": f"Bearer {cognitive}"},
        {},
    ):
        refused = requests.get(door.files, params=PROJECT_V, headers=headers, timeout=10)
        assert refused.status_code == 401, headers
        assert list(refused.json()["error"]) == ["message", "type", "param", "code"]
    assert door.get().status_code == 200
    missing = door.get(params={"api-version": None})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "api-version"


def test_the_project_route_has_no_uploads_and_no_import(project):
    """No recording or page shows them there: uploads address no operation (404); ``POST files/import`` is
    a POST to the file ``import`` (405, as on v1 and the agents route)."""
    upload = requests.post(
        f"{project.files.removesuffix('/files')}/uploads",
        params=PROJECT_V,
        headers=project.headers,
        json={"filename": "a", "purpose": "assistants", "bytes": 1, "mime_type": "text/plain"},
        timeout=10,
    )
    assert upload.status_code == 404
    assert upload.json()["error"]["type"] == "invalid_request_error"
    imported = requests.post(
        f"{project.files}/import",
        params=PROJECT_V,
        headers=project.headers,
        json={"filename": "a", "purpose": "fine-tune", "content_url": "https://example.com/a"},
        timeout=10,
    )
    assert imported.status_code == 405


def test_the_project_route_takes_expires_after(project):
    created = project.create(
        content_for("fine-tune"),
        "fine-tune",
        **{"expires_after[anchor]": "created_at", "expires_after[seconds]": "7200"},
    ).json()
    assert created["expires_at"] == created["created_at"] + 7200
    refused = project.create(
        content_for("fine-tune"),
        "fine-tune",
        **{"expires_after[anchor]": "created_at", "expires_after[seconds]": "60"},
    )
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "expires_after"
