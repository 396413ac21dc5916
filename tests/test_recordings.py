"""The provider handles the live service's recorded answers exactly as they came, through its real client
stack: :class:`AzureOpenAIClient` over HTTP to :class:`tests.replay.Replay`, and the ``Files``, ``Uploads``
and ``Waits`` services on top.

Each test replays one recording of ``tests/specs/recordings`` (provenance: ``tests/specs/SOURCES.md``) and
asserts that every request matched the recorded one (method, path, query, auth header) and that every
recorded exchange was asked for. What a recording cannot show our client doing is said in the test.
Request bodies are never compared: our multipart body (boundary, part order) differs from the recording
SDKs', and the file content is ours.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_aoai.exceptions import AzureOpenAIFileProcessingError, AzureOpenAINotFoundError
from airflow_provider_aoai.http.client import AzureOpenAIClient
from airflow_provider_aoai.models import UPLOAD_EXPIRY_SECONDS, Surface
from airflow_provider_aoai.resources.files import Files
from airflow_provider_aoai.resources.uploads import Uploads
from airflow_provider_aoai.resources.waits import Waits
from airflow_provider_aoai.validation import MIN_POLL_SECONDS
from tests.replay import Replay, answer_body, load_recording, without_truncation_markers


class ApiKey:
    """The data plane recordings' auth: an ``api-key`` header (its value sanitized)."""

    def headers(self) -> dict[str, str]:
        return {"api-key": "replayed-api-key"}


class Bearer:
    """The project route recordings' auth: an Entra ID bearer token (sanitized or stripped)."""

    def headers(self) -> dict[str, str]:
        return {"Authorization": "Bearer replayed-token"}


def client(replay: Replay, api_version: str | None = None, *, project: bool = False) -> AzureOpenAIClient:
    """Our client for the replay: a resource endpoint, or a project's OpenAI route (``/api/projects/p/openai``
    selects Surface.FOUNDRY_OPENAI and its api-version 2025-11-15-preview)."""
    endpoint = f"{replay.url}/api/projects/p/openai" if project else replay.url
    return AzureOpenAIClient(
        endpoint=endpoint,
        auth=Bearer() if project else ApiKey(),
        api_version=api_version,
        max_retries=0,
        timeout=10,
    )


@pytest.fixture
def replay() -> Iterator[Callable[[dict[str, Any]], Replay]]:
    """Starts a :class:`Replay` of a recording; all are stopped when the test ends."""
    with ExitStack() as stack:
        yield lambda recording: stack.enter_context(Replay(recording))


def assert_replayed(*replays: Replay) -> None:
    """Every request matched the recorded one, and every recorded exchange was asked for."""
    for played in replays:
        assert played.mismatches == [], played.mismatches
        assert played.remaining == 0, f"{played.remaining} recorded exchange(s) were never asked for"


def source(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def recorded_body(recording: dict[str, Any], index: int) -> Any:
    return recording["exchanges"][index]["response"]["body"]


CHAT = b'{"messages": [{"role": "user", "content": "x"}]}\n'
BATCH = b'{"custom_id": "r1", "method": "POST", "url": "/chat/completions", "body": {}}\n'


# ------------------------------------------------------------------------------ the data plane
def test_a_small_batch_file_is_processed_in_its_201_answer_and_a_second_delete_is_not_a_404(replay, tmp_path):
    """``aoai_batch_file_create_get_delete_2025-01-01-preview.json``: 201 with Location and the file already
    ``processed``; GET; DELETE; DELETE again answers 200 ``deleted: false``."""
    recording = load_recording("aoai_batch_file_create_get_delete_2025-01-01-preview.json")
    played = replay(recording)
    files = Files(client(played, "2025-01-01-preview"))

    created = files.upload_file(source=source(tmp_path, "batch.jsonl", BATCH), purpose="batch")
    assert created == recorded_body(recording, 0)
    assert created["status"] == "processed" and files.settled(created)  # nothing to wait for
    assert files.get_file(file_id=created["id"]) == recorded_body(recording, 1)
    assert files.delete_file(file_id=created["id"]) == {
        "object": "file",
        "deleted": True,
        "id": created["id"],
    }
    again = files.delete_file(file_id=created["id"])
    assert again == {"object": "file", "deleted": False, "id": created["id"]}
    assert_replayed(played)


def test_a_fine_tune_file_that_fails_validation_raises_with_the_recorded_status_details(replay, tmp_path):
    """``aoai_finetune_file_validation_error_2025-01-01-preview.json``: 201 ``pending``; the next GET says
    ``error`` with the service's words; DELETE."""
    recording = load_recording("aoai_finetune_file_validation_error_2025-01-01-preview.json")
    played = replay(recording)
    files = Files(client(played, "2025-01-01-preview"))

    created = files.upload_file(source=source(tmp_path, "ft.jsonl", CHAT), purpose="fine-tune")
    assert created["status"] == "pending"
    with pytest.raises(AzureOpenAIFileProcessingError) as caught:
        Waits(files).wait_for_file(file_id=created["id"], poll_interval=MIN_POLL_SECONDS, timeout=10)
    assert caught.value.status == "error"
    assert (
        caught.value.status_details == "Validation of jsonl file failed: Deserialization of line #0 failed."
    )
    assert caught.value.file == recorded_body(recording, 1)
    assert files.delete_file(file_id=created["id"])["deleted"] is True
    assert_replayed(played)


def test_an_assistants_file_deleted_twice_is_a_404_with_the_recorded_message_and_request_id(replay, tmp_path):
    """``aoai_assistants_file_create_delete_404_2024-10-01-preview.json``: 200 (no Location) ``processed``;
    DELETE; DELETE again, 404 ``No such File object``.

    The recording's second DELETE was sent with another api-version (2025-01-01-preview); our client sends
    one api-version per connection, so a second client sends it.
    """
    recording = load_recording("aoai_assistants_file_create_delete_404_2024-10-01-preview.json")
    played = replay(recording)
    files = Files(client(played, "2024-10-01-preview"))

    created = files.upload_file(source=source(tmp_path, "notes.txt", b"delete me"), purpose="assistants")
    assert created == recorded_body(recording, 0)
    assert files.delete_file(file_id=created["id"])["deleted"] is True
    with pytest.raises(AzureOpenAINotFoundError) as caught:
        Files(client(played, "2025-01-01-preview")).delete_file(file_id=created["id"])
    error = caught.value
    assert (error.status, error.code, error.target) == (404, None, "id")
    assert error.message == f"No such File object: {created['id']}"
    assert error.request_id == "f2026154-a06e-40f5-a42f-0d08a370dd15"  # apim-request-id comes first
    assert_replayed(played)


@pytest.mark.parametrize(
    ("dropped", "request_id"),
    [
        ("X-Request-ID", "f2026154-a06e-40f5-a42f-0d08a370dd15"),
        ("apim-request-id", "dac60114-ad8c-43b5-b45f-104e07c43138"),
    ],
)
def test_an_errors_request_id_is_read_from_either_header(replay, dropped, request_id):
    """The recorded 404 of ``aoai_assistants_file_create_delete_404_*`` carries both ``apim-request-id`` and
    ``X-Request-ID``; the Azure files backend's answers carry only the first. Derived from that one
    exchange, each header in turn left out (not a recording of its own): either one gives the id."""
    recording = load_recording("aoai_assistants_file_create_delete_404_2024-10-01-preview.json")
    exchange = copy.deepcopy(recording["exchanges"][2])
    del exchange["response"]["headers"][dropped]
    played = replay({**recording, "exchanges": [exchange]})
    file_id = exchange["response"]["body"]["error"]["message"].rsplit(" ", 1)[1]

    with pytest.raises(AzureOpenAINotFoundError) as caught:
        Files(client(played, "2025-01-01-preview")).delete_file(file_id=file_id)
    assert caught.value.request_id == request_id
    assert_replayed(played)


def test_the_data_plane_list_mixes_both_backends_shapes_in_one_page(replay):
    """``aoai_list_files_dotnet_2025-01-01-preview.json``: one answer, no ``has_more``, so one request.

    The researcher cut most of the ~800 KB list and marked the cut with a string among the objects; that
    marker is dropped (the live answer held only objects)."""
    recording = without_truncation_markers(load_recording("aoai_list_files_dotnet_2025-01-01-preview.json"))
    played = replay(recording)
    files = Files(client(played, "2025-01-01-preview"))

    listed = files.list_files()
    assert listed == recorded_body(recording, 0)["data"]
    by_id = {file["id"]: file for file in listed}
    assert by_id["assistant-aJc1mwF2lenYMj6s2f1F3mzU"]["status_details"] is None
    assert "status_details" not in by_id["file-bba7ed1001d846e7899b8d38a9a8f53a"]
    assert by_id["file-c963b49d-dad5-4ee2-b5fd-5b0b776bd20e"]["purpose"] == "batch_output"
    assert_replayed(played)


def test_an_assistants_file_created_read_listed_by_purpose_and_deleted(replay, tmp_path):
    """``aoai_assistants_file_crud_list_java_2024-07-01-preview.json`` (the Java SDK): POST, GET, the list
    filtered by ``purpose=assistants`` (truncation marker dropped, as above), DELETE."""
    recording = without_truncation_markers(
        load_recording("aoai_assistants_file_crud_list_java_2024-07-01-preview.json")
    )
    played = replay(recording)
    files = Files(client(played, "2024-07-01-preview"))

    created = files.upload_file(source=source(tmp_path, "java.txt", b"x" * 98), purpose="assistants")
    assert created == recorded_body(recording, 0) and files.settled(created)
    assert files.get_file(file_id=created["id"]) == created
    listed = files.list_files(purpose="assistants")
    assert listed[0]["id"] == created["id"]
    assert files.delete_file(file_id=created["id"])["deleted"] is True
    assert_replayed(played)


@pytest.mark.parametrize(
    "name",
    [
        "aoai_upload_create_cancel_async_2024-08-01-preview.json",
        "aoai_upload_create_cancel_sync_2024-08-01-preview.json",
    ],
)
def test_an_upload_created_and_cancelled(replay, name):
    """An Upload's create answers 200 without Location, its id ``assistant-upload_<24 alphanumerics>``,
    expiring one hour after its creation; cancel answers the same object ``cancelled``."""
    recording = load_recording(name)
    played = replay(recording)
    connection = client(played, "2024-08-01-preview")
    uploads = Uploads(connection, Files(connection))

    upload = uploads.create_upload(
        filename="large_file.txt", purpose="assistants", total_bytes=305, mime_type="text/plain"
    )
    assert upload == recorded_body(recording, 0)
    assert re.fullmatch(r"assistant-upload_[A-Za-z0-9]{24}", upload["id"])
    assert upload["expires_at"] == upload["created_at"] + UPLOAD_EXPIRY_SECONDS == upload["created_at"] + 3600
    # The recorded request body (body_summary): the same document, field for field.
    assert json.loads(played.requests[0].body) == {
        "filename": "large_file.txt",
        "purpose": "assistants",
        "bytes": 305,
        "mime_type": "text/plain",
    }
    cancelled = uploads.cancel_upload(upload_id=upload["id"])
    assert cancelled == {**upload, "status": "cancelled"}
    assert_replayed(played)


# ------------------------------------------------------------------------------ a project's OpenAI route
def test_a_project_file_created_polled_downloaded_listed_page_by_page_and_deleted(replay, tmp_path):
    """``foundry_project_files_crud_2025-11-15-preview.json`` (the openai SDK through azure-ai-projects):
    201 with Location (sanitized), GETs ``pending`` -> ``running`` -> ``processed`` -> ``processed``, the
    content, the list, DELETE; every JSON read gzip-encoded (we send ``Accept-Encoding: gzip``).

    The recorded list answers ``has_more: true``; the recording stops there, so the next page our client
    asks for (``after=<the last id>``) is answered by one exchange of ours, an empty last page. The list's
    truncation marker is dropped, as above.
    """
    recording = without_truncation_markers(
        load_recording("foundry_project_files_crud_2025-11-15-preview.json")
    )
    listed_page = recorded_body(recording, 6)
    next_page = {
        "request": {
            "method": "GET",
            "uri": "https://replay.invalid/api/projects/p/openai/files"
            f"?after={listed_page['last_id']}&api-version=2025-11-15-preview",
            "headers": {},
        },
        "response": {
            "status": 200,
            "headers": {"Content-Type": "application/json"},
            "body": {"object": "list", "data": [], "has_more": False, "first_id": None, "last_id": None},
        },
    }
    exchanges = recording["exchanges"]
    played = replay({**recording, "exchanges": [*exchanges[:7], next_page, *exchanges[7:]]})
    files = Files(client(played, project=True))
    assert files.surface is Surface.FOUNDRY_OPENAI
    content = answer_body(exchanges[5]["response"])  # the recorded download: the uploaded file itself

    created = files.upload_file(source=source(tmp_path, "test_file.jsonl", content), purpose="fine-tune")
    assert created == recorded_body(recording, 0) and created["status"] == "pending"
    processed = Waits(files).wait_for_file(file_id=created["id"], poll_interval=MIN_POLL_SECONDS, timeout=10)
    assert processed == recorded_body(recording, 3)  # pending, running, then processed: three polls
    assert files.get_file(file_id=created["id"])["status"] == "processed"
    downloaded = files.download_file(file_id=created["id"], destination=tmp_path / "copy.jsonl")
    assert downloaded["bytes"] == len(content) == 2706
    assert (tmp_path / "copy.jsonl").read_bytes() == content
    listed = files.list_files()
    assert listed == listed_page["data"]
    assert listed[-1]["id"] == listed_page["last_id"]
    assert files.delete_file(file_id=created["id"])["deleted"] is True
    assert all("gzip" in seen.headers.get("accept-encoding", "") for seen in played.requests)
    assert_replayed(played)


def test_a_project_fine_tune_file_is_polled_until_processed(replay, tmp_path):
    """``foundry_project_finetune_file_create_poll_2025-11-15-preview.json``: 201 ``pending`` (its id
    sanitized to ``sanitized-file-id``), then gzip-encoded GETs ``pending``, ``processed``."""
    recording = load_recording("foundry_project_finetune_file_create_poll_2025-11-15-preview.json")
    played = replay(recording)
    files = Files(client(played, project=True))

    created = files.upload_file(source=source(tmp_path, "sft.jsonl", CHAT), purpose="fine-tune")
    assert created["id"] == "sanitized-file-id" and created["status"] == "pending"
    processed = Waits(files).wait_for_file(file_id=created["id"], poll_interval=MIN_POLL_SECONDS, timeout=10)
    assert processed == recorded_body(recording, 2)
    assert_replayed(played)


def test_a_project_assistants_file_is_processed_in_its_200_create_answer(replay, tmp_path):
    """``foundry_project_assistants_file_create_get_dotnet_2025-11-15-preview.json`` (.NET, a bearer
    token): 200 without Location, ``processed``, ``expires_at`` and ``status_details`` null; GET."""
    recording = load_recording("foundry_project_assistants_file_create_get_dotnet_2025-11-15-preview.json")
    played = replay(recording)
    files = Files(client(played, project=True))

    created = files.upload_file(source=source(tmp_path, "hello.txt", b"hello, world"), purpose="assistants")
    assert created == recorded_body(recording, 0)
    assert re.fullmatch(r"assistant-[A-Za-z0-9]{22}", created["id"])
    assert created["expires_at"] is None and created["status_details"] is None and files.settled(created)
    assert files.get_file(file_id=created["id"]) == created
    assert_replayed(played)


def test_a_project_fine_tune_files_201_locates_it_on_the_resource(replay, tmp_path):
    """``foundry_project_finetune_file_create_get_dotnet_2025-11-15-preview.json`` (.NET): 201 whose
    Location is the resource's data plane URL at api-version 2025-03-01-preview (our client does not follow
    it); the GET answers ``processed``, not gzip-encoded for this client, with ``Vary: Accept-Encoding``."""
    recording = load_recording("foundry_project_finetune_file_create_get_dotnet_2025-11-15-preview.json")
    played = replay(recording)
    files = Files(client(played, project=True))

    created = files.upload_file(source=source(tmp_path, "ft.jsonl", CHAT), purpose="fine-tune")
    assert created == recorded_body(recording, 0) and created["status"] == "pending"
    assert files.get_file(file_id=created["id"]) == recorded_body(recording, 1)
    assert_replayed(played)
