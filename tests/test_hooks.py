"""AzureOpenAIHook over real HTTP against the emulator: every method, every source kind, bad input."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys

import pytest

from airflow_provider_aoai.exceptions import (
    AzureOpenAIAuthenticationError,
    AzureOpenAIConfigError,
    AzureOpenAIFileProcessingError,
    AzureOpenAIInvalidArgumentError,
    AzureOpenAINotFoundError,
    AzureOpenAIStoppedError,
    AzureOpenAIUnsupportedOperationError,
    AzureOpenAIUploadError,
    AzureOpenAIWaitTimeoutError,
)
from airflow_provider_aoai.hooks import AzureOpenAIHook
from airflow_provider_aoai.models import MAX_FILE_BYTES, FileStatus, UploadStatus
from tests.conftest import API_KEY, CHAT_LINE, jsonl, set_connection

FAST = {"poll_interval": 0.05, "timeout": 10}


def request_count(emulator) -> int:
    return len(emulator.faults.requests)


# ------------------------------------------------------------------------------ files
def test_upload_file_get_list_download_delete(hook, emulator, chat_file, tmp_path):
    file = hook.upload_file(source=chat_file, purpose="fine-tune")
    assert (
        file["object"] == "file"
        and file["filename"] == "train.jsonl"
        and file["bytes"] == chat_file.stat().st_size
    )
    assert FileStatus(file["status"]) is FileStatus.PENDING
    processed = hook.wait_for_file(file_id=file["id"], **FAST)
    assert processed["status"] == "processed"
    assert hook.get_file(file_id=file["id"])["id"] == file["id"]
    assert file["id"] in {f["id"] for f in hook.list_files(purpose="fine-tune")}
    assert file["id"] not in {f["id"] for f in hook.list_files(purpose="batch")}
    result = hook.download_file(file_id=file["id"], destination=tmp_path / "copy.jsonl")
    assert (tmp_path / "copy.jsonl").read_bytes() == chat_file.read_bytes()
    assert result == {
        "file_id": file["id"],
        "destination": str(tmp_path / "copy.jsonl"),
        "bytes": chat_file.stat().st_size,
    }
    json.dumps(result)  # XCom-ready
    assert hook.delete_file(file_id=file["id"]) == {"object": "file", "deleted": True, "id": file["id"]}
    with pytest.raises(AzureOpenAINotFoundError) as caught:
        hook.get_file(file_id=file["id"])
    assert caught.value.status == 404 and caught.value.code == "notFound" and caught.value.request_id


def test_upload_file_with_a_filename_override(hook, chat_file):
    assert (
        hook.upload_file(source=chat_file, purpose="fine-tune", filename="renamed.jsonl")["filename"]
        == "renamed.jsonl"
    )


def test_sources_of_every_kind(hook, chat_file):
    import fsspec
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    with fsspec.open("memory://datasets/train.jsonl", "wb") as out:
        out.write(chat_file.read_bytes())
    size = chat_file.stat().st_size
    sources = [
        str(chat_file),
        f"file://{chat_file}",
        "memory://datasets/train.jsonl",
        ObjectStoragePath(f"file://{chat_file}"),
        io.BytesIO(chat_file.read_bytes()),
    ]
    for source in sources:
        assert hook.upload_file(source=source, purpose="fine-tune")["bytes"] == size, source
    upload = hook.upload_multipart(
        source="memory://datasets/train.jsonl", purpose="fine-tune", part_size=1024 * 1024
    )
    assert upload["file"]["bytes"] == size and upload["filename"] == "train.jsonl"


def test_import_file(hook, emulator):
    url = emulator.put_blob("import.jsonl", jsonl([CHAT_LINE] * 2))
    file = hook.import_file(content_url=url, filename="import.jsonl", purpose="fine-tune")
    assert file["status"] == "pending" and file["filename"] == "import.jsonl"
    assert hook.wait_for_file(file_id=file["id"], **FAST)["bytes"] == len(jsonl([CHAT_LINE] * 2))


def test_wait_for_file_raises_with_status_details_and_times_out(hook, emulator, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(jsonl([CHAT_LINE, {"nope": 1}]))
    file = hook.upload_file(source=bad, purpose="fine-tune")
    with pytest.raises(AzureOpenAIFileProcessingError) as caught:
        hook.wait_for_file(file_id=file["id"], **FAST)
    assert caught.value.status == "error" and "Line 2" in caught.value.status_details
    assert "Line 2" in str(caught.value)

    slow = hook.upload_file(source=bad, purpose="fine-tune")
    emulator.store.force_statuses(slow["id"], ["running"])
    with pytest.raises(AzureOpenAIWaitTimeoutError):
        hook.wait_for_file(file_id=slow["id"], poll_interval=0.05, timeout=0.2)


# ------------------------------------------------------------------------------ uploads
def test_upload_steps_one_by_one(hook, emulator):
    data = jsonl([CHAT_LINE] * 3)
    upload = hook.create_upload(
        filename="steps.jsonl", purpose="fine-tune", total_bytes=len(data), mime_type="text/jsonl"
    )
    assert UploadStatus(upload["status"]) is UploadStatus.PENDING
    first = hook.add_upload_part(upload_id=upload["id"], data=data[:10])
    second = hook.add_upload_part(upload_id=upload["id"], data=data[10:])
    assert first["upload_id"] == upload["id"] and first["object"] == "upload.part"
    done = hook.complete_upload(
        upload_id=upload["id"], part_ids=[first["id"], second["id"]], md5=hashlib.md5(data).hexdigest()
    )
    assert UploadStatus(done["status"]) is UploadStatus.COMPLETED and done["file"]["bytes"] == len(data)
    other = hook.create_upload(filename="x.jsonl", purpose="fine-tune", total_bytes=5, mime_type="text/jsonl")
    assert hook.cancel_upload(upload_id=other["id"])["status"] == "cancelled"


def test_upload_multipart_parallel_parts_and_md5(hook, emulator, tmp_path):
    path = tmp_path / "big.jsonl"
    path.write_bytes(jsonl([CHAT_LINE] * 60000))  # about 8 MiB: several 1 MiB parts
    emulator.faults.set_link(latency_seconds=0.2)  # so that parallel parts overlap visibly
    upload = hook.upload_multipart(source=path, purpose="fine-tune", part_size=1024 * 1024, max_concurrency=4)
    assert upload["status"] == "completed" and upload["bytes"] == path.stat().st_size
    parts = emulator.faults.calls("uploads.parts")
    assert len([p for p in parts if p.status == 200]) == -(-path.stat().st_size // (1024 * 1024))
    assert emulator.faults.peak_in_flight["uploads.parts"] == 4
    assert hook.wait_for_file(file_id=upload["file"]["id"], **FAST)["status"] == "processed"
    assert (
        hook.download_file(file_id=upload["file"]["id"], destination=tmp_path / "back.jsonl")["bytes"]
        == path.stat().st_size
    )
    assert (tmp_path / "back.jsonl").read_bytes() == path.read_bytes()
    json.dumps(upload)


def test_upload_multipart_cancels_when_a_part_keeps_failing(hook, emulator, tmp_path):
    path = tmp_path / "big.jsonl"
    path.write_bytes(jsonl([CHAT_LINE] * 20000))
    emulator.faults.inject("uploads.parts", status=400, count=1)
    with pytest.raises(AzureOpenAIUploadError) as caught:
        hook.upload_multipart(source=path, purpose="fine-tune", part_size=1024 * 1024, max_concurrency=2)
    assert emulator.store.get_upload(caught.value.upload_id)["status"] == "cancelled"
    assert caught.value.__cause__.status == 400


def test_upload_multipart_stop_event_cancels(hook, emulator, tmp_path):
    import threading

    path = tmp_path / "big.jsonl"
    path.write_bytes(jsonl([CHAT_LINE] * 20000))
    stop = threading.Event()
    created = []

    def on_created(upload_id):
        created.append(upload_id)
        stop.set()  # as on_kill would, right after the upload exists

    with pytest.raises(AzureOpenAIStoppedError):
        hook.upload_multipart(
            source=path, purpose="fine-tune", part_size=1024 * 1024, stop=stop, on_upload_created=on_created
        )
    assert emulator.store.get_upload(created[0])["status"] == "cancelled"


def test_upload_multipart_logs_progress(hook, tmp_path, capsys, caplog):
    caplog.set_level("INFO")
    path = tmp_path / "big.jsonl"
    path.write_bytes(jsonl([CHAT_LINE] * 20000))
    hook.upload_multipart(source=path, purpose="fine-tune", part_size=1024 * 1024, progress_interval=0)
    captured = capsys.readouterr()  # Airflow 3 logs to stdout through structlog, Airflow 2 through logging
    progress = [
        line for line in (captured.out + captured.err + caplog.text).splitlines() if "Uploaded " in line
    ]
    assert progress and "MB/s" in progress[-1] and "ETA" in progress[-1] and "(100.0%)" in progress[-1]


# ------------------------------------------------------------------------------ bad input: nothing is sent
def _sparse(tmp_path, name, size):
    path = tmp_path / name
    with path.open("wb") as out:
        out.truncate(size)
    return path


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda h, p: h.upload_file(source=p / "missing.jsonl", purpose="fine-tune"), "source"),
        (lambda h, p: h.upload_file(source=p, purpose="fine-tune"), "source"),  # a directory
        (lambda h, p: h.upload_file(source=_sparse(p, "empty.jsonl", 0), purpose="fine-tune"), "source"),
        (
            lambda h, p: h.upload_file(
                source=_sparse(p, "huge.bin", MAX_FILE_BYTES + 1), purpose="assistants"
            ),
            "source",
        ),
        (lambda h, p: h.upload_file(source=_sparse(p, "a.bin", 10), purpose="poetry"), "purpose"),
        (lambda h, p: h.upload_file(source=_sparse(p, "zeros.jsonl", 10), purpose="fine-tune"), "source"),
        (
            lambda h, p: h.upload_file(source=_sparse(p, "a.bin", 10), purpose="assistants", filename=" "),
            "filename",
        ),
        (
            lambda h, p: h.import_file(content_url="not a url", filename="a.jsonl", purpose="fine-tune"),
            "content_url",
        ),
        (
            lambda h, p: h.import_file(
                content_url="ftp://host/a.jsonl", filename="a.jsonl", purpose="fine-tune"
            ),
            "content_url",
        ),
        (
            lambda h, p: h.import_file(content_url="https://h/a.jsonl", filename="", purpose="fine-tune"),
            "filename",
        ),
        (
            lambda h, p: h.import_file(content_url="https://h/a.jsonl", filename="a", purpose="vision"),
            "purpose",
        ),
        (
            lambda h, p: h.upload_multipart(
                source=_sparse(p, "a.bin", 10), purpose="assistants", part_size=1000
            ),
            "part_size",
        ),
        (
            lambda h, p: h.upload_multipart(
                source=_sparse(p, "a.bin", 10), purpose="assistants", part_size=2**40
            ),
            "part_size",
        ),
        (
            lambda h, p: h.upload_multipart(
                source=_sparse(p, "a.bin", 10), purpose="assistants", max_concurrency=0
            ),
            "max_concurrency",
        ),
        (
            lambda h, p: h.upload_multipart(source=_sparse(p, "a.bin", 9 * 2**30 + 1), purpose="assistants"),
            "source",
        ),
        (
            lambda h, p: h.create_upload(filename="a", purpose="fine-tune", total_bytes=0, mime_type="t"),
            "total_bytes",
        ),
        (lambda h, p: h.complete_upload(upload_id="u", part_ids=[]), "part_ids"),
        (lambda h, p: h.get_file(file_id=".."), "file_id"),
        (lambda h, p: h.add_upload_part(upload_id="u", data=b""), "data"),
    ],
)
def test_bad_arguments_fail_before_any_request(hook, emulator, tmp_path, call, argument):
    hook.client  # noqa: B018 - build the client first; what follows must not send anything
    before = request_count(emulator)
    with pytest.raises(AzureOpenAIInvalidArgumentError) as caught:
        call(hook, tmp_path)
    assert caught.value.argument.startswith(argument)
    assert str(caught.value).startswith(argument)
    assert request_count(emulator) == before


def test_non_seekable_stream_is_refused(hook):
    class Pipe(io.RawIOBase):
        def readable(self):
            return True

    with pytest.raises(AzureOpenAIInvalidArgumentError, match="seekable"):
        hook.upload_file(source=Pipe(), purpose="assistants")


# ------------------------------------------------------------------------------ surfaces
def test_v1_surface(emulator, monkeypatch, chat_file):
    set_connection(monkeypatch, "aoai_v1", host=emulator.url, password=API_KEY, extra={"api_version": "v1"})
    hook = AzureOpenAIHook(aoai_conn_id="aoai_v1")
    assert hook.surface.value == "v1"
    upload = hook.upload_multipart(source=chat_file, purpose="fine-tune")
    assert hook.wait_for_file(file_id=upload["file"]["id"], **FAST)["status"] == "processed"
    assert emulator.faults.requests[-1].path.startswith("/openai/v1/files/")
    with pytest.raises(AzureOpenAIUnsupportedOperationError):
        hook.import_file(content_url="https://h/a.jsonl", filename="a.jsonl", purpose="fine-tune")


def test_endpoint_with_openai_v1_suffix_selects_v1(emulator, monkeypatch):
    set_connection(monkeypatch, "aoai_v1b", host=f"{emulator.url}/openai/v1/", password=API_KEY)
    assert AzureOpenAIHook(aoai_conn_id="aoai_v1b").test_connection()[0]


def test_test_connection_reports_failure_without_the_key(emulator, monkeypatch):
    set_connection(monkeypatch, "aoai_bad", host=emulator.url, password="wrong-key-that-is-long")
    ok, message = AzureOpenAIHook(aoai_conn_id="aoai_bad").test_connection()
    assert not ok and "401" in message and "wrong-key-that-is-long" not in message
    with pytest.raises(AzureOpenAIAuthenticationError):
        AzureOpenAIHook(aoai_conn_id="aoai_bad").list_files()


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"host": "https://x.openai.azure.com"}, "password"),
        ({"host": "https://x.openai.azure.com", "extra": {"auth_type": "magic"}}, "magic"),
        (
            {
                "host": "https://x.openai.azure.com",
                "extra": {
                    "auth_type": "client_secret",
                    "client_id": "c",
                    "client_secret": "not-a-real-secret-value",
                },
            },
            "tenant_id",
        ),
        (
            {
                "host": "https://x.openai.azure.com",
                "extra": {
                    "auth_type": "client_secret",
                    "tenant_id": "t",
                    "client_secret": "not-a-real-secret-value",
                },
            },
            "client_id",
        ),
        (
            {
                "host": "https://x.openai.azure.com",
                "extra": {"auth_type": "client_secret", "tenant_id": "t", "client_id": "c"},
            },
            "client_secret",
        ),
        ({"host": "", "password": "k"}, "host"),
        ({"host": "http://x.openai.azure.com", "password": "k"}, "plain http"),
        ({"host": "https://x.services.ai.azure.com/api/projects/p", "password": "k"}, "Entra ID"),
        ({"host": "https://x.openai.azure.com", "password": "k", "extra": {"timeout": "soon"}}, "timeout"),
    ],
)
def test_incomplete_connections_name_the_connection_and_field(monkeypatch, fields, expected):
    set_connection(monkeypatch, "aoai_broken", **fields)
    with pytest.raises(AzureOpenAIConfigError) as caught:
        AzureOpenAIHook(aoai_conn_id="aoai_broken").client  # noqa: B018
    assert "'aoai_broken'" in str(caught.value) and expected in str(caught.value)


def test_workload_identity_without_its_environment_is_a_config_error(monkeypatch):
    for name in ("AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_FEDERATED_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    set_connection(
        monkeypatch, "aoai_wi", host="https://x.openai.azure.com", extra={"auth_type": "workload_identity"}
    )
    with pytest.raises(AzureOpenAIConfigError, match=r"'aoai_wi'.*workload_identity"):
        AzureOpenAIHook(aoai_conn_id="aoai_wi").client  # noqa: B018


def test_connection_from_a_secrets_backend(emulator, tmp_path):
    """A connection served by a secrets backend (the local filesystem one), in a fresh interpreter."""
    connections = tmp_path / "connections.json"
    connections.write_text(
        json.dumps({"aoai_from_backend": {"conn_type": "aoai", "host": emulator.url, "password": API_KEY}})
    )
    env = {
        **os.environ,
        "AIRFLOW__SECRETS__BACKEND": "airflow.secrets.local_filesystem.LocalFilesystemBackend",
        "AIRFLOW__SECRETS__BACKEND_KWARGS": json.dumps({"connections_file_path": str(connections)}),
    }
    code = (
        "from airflow_provider_aoai.hooks import AzureOpenAIHook\n"
        "print(AzureOpenAIHook(aoai_conn_id='aoai_from_backend').test_connection())"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, env=env, timeout=120
    )
    assert "(True, 'Connected to" in result.stdout, result.stderr[-2000:]


def test_provider_info_declares_the_connection_form():
    from airflow_provider_aoai import get_provider_info

    info = get_provider_info()
    conn = info["connection-types"][0]
    assert conn["connection-type"] == "aoai" and conn["hook-class-name"].endswith("AzureOpenAIHook")
    assert conn["conn-fields"]["auth_type"]["schema"]["default"] == "api_key"
    assert conn["ui-field-behaviour"]["relabeling"]["password"] == "API key or client secret"
    assert (
        AzureOpenAIHook.get_ui_field_behaviour()["hidden_fields"]
        == conn["ui-field-behaviour"]["hidden-fields"]
    )
    from importlib.metadata import entry_points

    assert any(
        ep.value == "airflow_provider_aoai:get_provider_info"
        for ep in entry_points(group="apache_airflow_provider")
    )


def test_list_files_follows_pages(emulator, monkeypatch, chat_file):
    set_connection(
        monkeypatch, "aoai_pages", host=emulator.url, password=API_KEY, extra={"api_version": "v1"}
    )
    hook = AzureOpenAIHook(aoai_conn_id="aoai_pages")
    for _ in range(3):
        hook.upload_file(source=chat_file, purpose="fine-tune")
    everything = hook.list_files()
    # ask for pages of one: the hook must walk them all
    original = hook.client.request_object

    def one_per_page(method, path, **kwargs):
        kwargs["params"] = {**(kwargs.get("params") or {}), "limit": 1}
        return original(method, path, **kwargs)

    monkeypatch.setattr(hook.client, "request_object", one_per_page)
    assert [f["id"] for f in hook.list_files()] == [f["id"] for f in everything]


def test_list_files_by_ids_keeps_only_those_and_pages_past_the_dropped(emulator, monkeypatch, chat_file):
    set_connection(
        monkeypatch, "aoai_pages", host=emulator.url, password=API_KEY, extra={"api_version": "v1"}
    )
    hook = AzureOpenAIHook(aoai_conn_id="aoai_pages")
    uploaded = [hook.upload_file(source=chat_file, purpose="fine-tune")["id"] for _ in range(5)]
    everything = [f["id"] for f in hook.list_files()]
    wanted = [uploaded[3], uploaded[1]]
    in_list_order = [i for i in everything if i in wanted]
    files = hook.list_files(ids=wanted)
    assert [f["id"] for f in files] == in_list_order
    assert files == [f for f in hook.list_files() if f["id"] in wanted]  # whole, as the plain list has them
    # Pages of two: most pages end with a file that is dropped, and the next page must still start after it.
    original = hook.client.request_object
    pages = []

    def two_per_page(method, path, **kwargs):
        kwargs["params"] = {**(kwargs.get("params") or {}), "limit": 2}
        pages.append(kwargs["params"].get("after"))
        return original(method, path, **kwargs)

    monkeypatch.setattr(hook.client, "request_object", two_per_page)
    assert [f["id"] for f in hook.list_files(ids=wanted)] == in_list_order
    assert pages == [None, *everything[1:-1:2]]  # each page after the last file of the one before
    assert hook.list_files(ids=["file-00000000000000000000000000000000"]) == []


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        ("file-abc", "non-empty list of ids"),  # a string is not a list of one id
        ([], "non-empty list of ids"),
        ({"file-abc"}, "non-empty list of ids"),
        ([7], r"ids\[0\].*string id"),
        (["file-abc", "file-a/../b"], r"ids\[1\].*'/'"),
        (["file-abc", "file-abc"], "more than once"),
    ],
)
def test_list_files_by_ids_refuses_bad_ids_before_asking(hook, emulator, ids, message):
    before = request_count(emulator)
    with pytest.raises(AzureOpenAIInvalidArgumentError, match=message):
        hook.list_files(ids=ids)
    assert request_count(emulator) == before


def test_a_long_list_by_ids_never_holds_its_other_files(monkeypatch, tmp_path):
    """The files not asked for are freed as they are parsed: a list of 2,000 files read for one of them sets
    off no young garbage collection, where the whole list sets off several (each dict counts while it lives).
    The emulator runs in a process of its own here: its allocations would count in this one."""
    import gc

    from airflow_provider_aoai.emulator import Emulator
    from tests.emulator_api import emulator_process

    data = tmp_path / "data"
    with Emulator(api_key=API_KEY, data_dir=data, processing_seconds=0) as emulator:
        source = tmp_path / "one.jsonl"
        for n in range(2000):
            source.write_bytes(jsonl([CHAT_LINE]))
            last = emulator.store.create_file(source=source, filename=f"f{n}.jsonl", purpose="assistants")
    with emulator_process(data_dir=data) as (_, url):
        set_connection(monkeypatch, "aoai_long", host=url, password=API_KEY)
        hook = AzureOpenAIHook(aoai_conn_id="aoai_long")
        assert len(hook.list_files(ids=[last["id"]])) == 1  # warm: the connection, everything imported

        def young_collections(read) -> int:
            gc.collect()
            before = gc.get_stats()[0]["collections"]
            read()
            return gc.get_stats()[0]["collections"] - before

        assert young_collections(hook.list_files) >= 3
        assert young_collections(lambda: hook.list_files(ids=[last["id"]])) == 0


def test_uri_style_connection_with_a_bare_host(emulator, monkeypatch):
    from urllib.parse import quote

    port = emulator.url.rsplit(":", 1)[1]
    monkeypatch.setenv("AIRFLOW_CONN_AOAI_URI", f"aoai://:{quote(API_KEY)}@127.0.0.1:{port}/?max_retries=1")
    hook = AzureOpenAIHook(aoai_conn_id="aoai_uri")
    assert hook.client.base_url == emulator.url and hook.client.max_retries == 1
    assert hook.test_connection()[0]


def test_negative_retries_name_the_connection(monkeypatch):
    set_connection(
        monkeypatch, "aoai_neg", host="https://x.openai.azure.com", password="k", extra={"max_retries": -1}
    )
    with pytest.raises(AzureOpenAIConfigError, match=r"'aoai_neg'.*max_retries"):
        AzureOpenAIHook(aoai_conn_id="aoai_neg").client  # noqa: B018


def test_a_failed_download_leaves_nothing_behind(hook, tmp_path):
    with pytest.raises(AzureOpenAINotFoundError):
        hook.download_file(file_id="file-missing", destination=tmp_path / "out.jsonl")
    assert list(tmp_path.iterdir()) == []


def test_download_to_an_object_storage_path(hook, chat_file, tmp_path):
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    file = hook.upload_file(source=chat_file, purpose="fine-tune")
    destination = ObjectStoragePath(f"file://{tmp_path}/copy.jsonl")
    assert (
        hook.download_file(file_id=file["id"], destination=destination)["bytes"] == chat_file.stat().st_size
    )
    assert (tmp_path / "copy.jsonl").read_bytes() == chat_file.read_bytes()


@pytest.mark.parametrize("name", ["données été.jsonl", "日本語 (v2).jsonl"])
def test_filenames_arrive_unchanged(hook, chat_file, name):
    assert hook.upload_file(source=chat_file, purpose="fine-tune", filename=name)["filename"] == name


@pytest.mark.filterwarnings("ignore:ProvidersManager.hooks is deprecated")  # the UI's own view, still valid
def test_airflow_registers_the_connection_type_and_its_form():
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    assert manager.hooks["aoai"].hook_class_name == "airflow_provider_aoai.hooks.AzureOpenAIHook"
    assert manager.hooks["aoai"].connection_testable
    fields = {
        name.removeprefix("extra__aoai__") for name in manager.connection_form_widgets if "__aoai__" in name
    }
    assert {
        "api_version",
        "auth_type",
        "tenant_id",
        "client_id",
        "scope",
        "federated_credential_file",
        "timeout",
        "max_retries",
    } <= fields
    assert not any(
        widget.is_sensitive
        for widget in manager.connection_form_widgets.values()
        if "__aoai__" in widget.field_name
    )
    assert manager.field_behaviours["aoai"]["relabeling"]["host"] == "Endpoint"


def test_a_quiet_cancel_of_a_bad_id_logs_it_escaped_and_sends_nothing(hook, emulator, capsys, caplog):
    caplog.set_level("WARNING")
    forged = "up-1\nINFO - a forged log line\x00"
    before = len(emulator.faults.requests)
    assert hook.cancel_upload_quietly(forged) is False
    assert len(emulator.faults.requests) == before
    captured = capsys.readouterr()  # Airflow 3 logs to stdout through structlog, Airflow 2 through logging
    text = captured.out + captured.err + caplog.text
    assert "Could not cancel upload" in text and "forged log line" in text
    assert "\nINFO - a forged" not in text and "\x00" not in text
