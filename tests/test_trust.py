"""Trust: the right object, the exact bytes, no secret in any text, nothing of the user's destroyed.

One section per class of problem (issue 7). Every test talks over real HTTP: to the emulator, or to
``MisbehavingService`` where the service must misbehave; request logs prove what was (not) sent.
"""

from __future__ import annotations

import io
import json
import math
import os
import socket
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from airflow_provider_aoai.exceptions import (
    AzureOpenAIConfigError,
    AzureOpenAIError,
    AzureOpenAIInvalidArgumentError,
    AzureOpenAINotFoundError,
    AzureOpenAIResponseError,
    AzureOpenAISourceChangedError,
)
from airflow_provider_aoai.hooks import AzureOpenAIHook
from tests.conftest import API_KEY, CHAT_LINE, jsonl, set_connection
from tests.misbehaving import Answer, MisbehavingService

CANARY = "CANARY-s3cr3t-0f-the-t3st"
BAD_IDS = ["", "   ", ".", "..", "a\nb", "a\rb", "a\x00b", "\t", "file-\x7f"]


def requests_served(emulator) -> int:
    return len(emulator.faults.requests)


# ------------------------------------------------------------------------------------------ 1. ids
def _id_calls(hook: AzureOpenAIHook, tmp_path: Path):
    return {
        "get_file": lambda v: hook.get_file(file_id=v),
        "delete_file": lambda v: hook.delete_file(file_id=v),
        "download_file": lambda v: hook.download_file(file_id=v, destination=tmp_path / "out.bin"),
        "wait_for_file": lambda v: hook.wait_for_file(file_id=v, poll_interval=0.05, timeout=1),
        "cancel_upload": lambda v: hook.cancel_upload(upload_id=v),
        "complete_upload": lambda v: hook.complete_upload(upload_id=v, part_ids=["p"]),
        "add_upload_part": lambda v: hook.add_upload_part(upload_id=v, data=b"x"),
        "complete_upload(part_ids)": lambda v: hook.complete_upload(upload_id="u", part_ids=[v]),
    }


@pytest.mark.parametrize("bad", BAD_IDS, ids=repr)
@pytest.mark.parametrize(
    "method",
    [
        "get_file",
        "delete_file",
        "download_file",
        "wait_for_file",
        "cancel_upload",
        "complete_upload",
        "add_upload_part",
        "complete_upload(part_ids)",
    ],
)
def test_bad_ids_are_refused_before_any_request(hook, emulator, tmp_path, method, bad):
    before = requests_served(emulator)
    with pytest.raises(AzureOpenAIInvalidArgumentError) as caught:
        _id_calls(hook, tmp_path)[method](bad)
    assert caught.value.argument.split("[")[0] in ("file_id", "upload_id", "part_ids")
    assert requests_served(emulator) == before


@pytest.mark.parametrize("bad", [".", "..", "", "a\nb"], ids=repr)
def test_foundry_ids_are_refused_before_any_request(emulator, monkeypatch, bad):
    for name, value in emulator.managed_identity_env().items():
        monkeypatch.setenv(name, value)
    set_connection(
        monkeypatch, "aoai_foundry", host=emulator.project_url("p"), extra={"auth_type": "managed_identity"}
    )
    foundry = AzureOpenAIHook(aoai_conn_id="aoai_foundry")
    before = requests_served(emulator)
    for call in (foundry.get_file, foundry.delete_file):
        with pytest.raises(AzureOpenAIInvalidArgumentError, match="file_id"):
            call(file_id=bad)
    assert requests_served(emulator) == before


@pytest.mark.parametrize(
    "suffix", ["#x", "?x=1", "/content", "%2Fcontent", "/../", "#", "\\x", " x", "%"], ids=repr
)
def test_an_id_the_service_never_mints_is_refused_before_any_request(suffix):
    """An id with '/', '?', '#', '%', '\\' or whitespace could address another object through a gateway that
    decodes the path before it routes (API Management in front of the service): it never leaves us."""
    with MisbehavingService() as service:
        service.answer = Answer(404, b'{"error": {"code": "notFound", "message": "no"}}')
        hook = _hook_for(service.url)
        for call, argument in (
            (lambda: hook.get_file(file_id=f"file-1{suffix}"), "file_id"),
            (lambda: hook.delete_file(file_id=f"file-1{suffix}"), "file_id"),
            (lambda: hook.cancel_upload(upload_id=f"up-1{suffix}"), "upload_id"),
            (lambda: hook.complete_upload(upload_id=f"up-1{suffix}", part_ids=["p1"]), "upload_id"),
            (lambda: hook.complete_upload(upload_id="up-1", part_ids=[f"p1{suffix}"]), "part_ids[0]"),
        ):
            with pytest.raises(AzureOpenAIInvalidArgumentError) as caught:
                call()
            assert caught.value.argument == argument
        assert service.seen == []


def test_the_ids_the_service_mints_pass_as_one_segment():
    """Letters, digits, '-', '_', '.' and ':' (file-<hex>, file-<uuid>, assistant-upload_<base62>)."""
    with MisbehavingService() as service:
        service.answer = Answer(404, b'{"error": {"code": "notFound", "message": "no"}}')
        hook = _hook_for(service.url)
        ids = [
            "file-0a1b",
            "file-1f2e3d4c-aaaa-bbbb-cccc-0123456789ab",
            "assistant-upload_TB1H98kPsm",
            "a.b:c",
        ]
        for file_id in ids:
            with pytest.raises(AzureOpenAINotFoundError):
                hook.get_file(file_id=file_id)
    from urllib.parse import quote

    paths = [seen.raw_path.split("?")[0] for seen in service.seen]
    assert paths == [f"/openai/files/{quote(i, safe='')}" for i in ids]


def test_a_fragment_never_deletes_another_file(hook, emulator, chat_file):
    file = hook.upload_file(source=chat_file, purpose="fine-tune")
    before = requests_served(emulator)
    with pytest.raises(AzureOpenAIInvalidArgumentError, match="file_id"):
        hook.delete_file(file_id=f"{file['id']}#x")
    assert requests_served(emulator) == before
    assert hook.get_file(file_id=file["id"])["id"] == file["id"]


def test_an_encoded_slash_never_reaches_another_operation(hook, emulator, tmp_path):
    upload = hook.create_upload(
        filename="u.jsonl", purpose="fine-tune", total_bytes=10, mime_type="text/jsonl"
    )
    before = requests_served(emulator)
    for upload_id in (f"{upload['id']}%2Fcancel#", f"{upload['id']}/cancel"):
        with pytest.raises(AzureOpenAIInvalidArgumentError, match="upload_id"):
            hook.complete_upload(upload_id=upload_id, part_ids=["p"])
    assert requests_served(emulator) == before
    assert emulator.store.get_upload(upload["id"])["status"] == "pending"


def test_a_list_is_never_taken_for_a_file():
    with MisbehavingService() as service:
        service.answer = Answer(200, json.dumps({"object": "list", "data": []}).encode())
        hook = _hook_for(service.url)
        with pytest.raises(AzureOpenAIResponseError) as caught:
            hook.get_file(file_id="file-1")
        assert caught.value.status == 200 and caught.value.request_id == "req-misbehaving-1"
        with pytest.raises(AzureOpenAIResponseError):
            hook.wait_for_file(file_id="file-1", poll_interval=0.05, timeout=1)
        service.answer = Answer(
            200, json.dumps({"object": "file", "id": "file-2", "status": "processed"}).encode()
        )
        with pytest.raises(AzureOpenAIResponseError, match="file-1"):
            hook.get_file(file_id="file-1")


def test_the_sensor_refuses_a_dot_id_in_every_mode(aoai_conn, emulator):
    from airflow_provider_aoai.sensors import AzureOpenAIFileStatusSensor

    before = requests_served(emulator)
    for deferrable in (False, True):
        sensor = AzureOpenAIFileStatusSensor(
            task_id="s", file_id=".", deferrable=deferrable, poke_interval=0.05
        )
        with pytest.raises(AzureOpenAIInvalidArgumentError, match="file_id"):
            sensor.execute({})
        with pytest.raises(AzureOpenAIInvalidArgumentError, match="file_id"):
            sensor.poke({})
    assert requests_served(emulator) == before


def _hook_for(url: str, conn_id: str = "aoai_misbehaving", **extra) -> AzureOpenAIHook:
    os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(
        {"conn_type": "aoai", "host": url, "password": API_KEY, "extra": {"max_retries": 0, **extra}}
    )
    return AzureOpenAIHook(aoai_conn_id=conn_id)


def test_one_id_rule_in_and_out():
    """Arguments (check_id) and the service's answers (is_usable_id) take the same characters, every code
    point checked: letters, digits, '-', '_', '.' and ':' of ASCII, nothing else."""
    import string

    from airflow_provider_aoai.models import is_usable_id
    from airflow_provider_aoai.validation import check_id

    allowed = set(string.ascii_letters + string.digits + "-_.:")
    for point in range(0x110000):
        ch = chr(point)
        assert is_usable_id(f"file-{ch}") is (ch in allowed), hex(point)
    for ch in ("\x00", "\x1f", "\x7f", "\x85", "\ud800", "\u2028", "\u00a0", "/", "%", "~", "é"):
        with pytest.raises(AzureOpenAIInvalidArgumentError, match="no id of the service has"):
            check_id(f"file-{ch}", "file_id")
    assert check_id("file-A.b_c:d-0", "file_id") == "file-A.b_c:d-0"
    longest = "f" * 256
    assert is_usable_id(longest) and check_id(longest, "file_id") == longest
    assert not is_usable_id(longest + "f")  # an answer's id we could not send back
    with pytest.raises(AzureOpenAIInvalidArgumentError, match="longer than"):
        check_id(longest + "f", "file_id")
    for dots in (".", ".."):
        assert not is_usable_id(dots)
        with pytest.raises(AzureOpenAIInvalidArgumentError, match="not an id"):
            check_id(dots, "file_id")


# ------------------------------------------------------------------------------------------ 2. bytes
def _big(tmp_path: Path, name: str = "big.jsonl", lines: int = 30000) -> Path:
    path = tmp_path / name
    path.write_bytes(jsonl([CHAT_LINE] * lines))  # about 4.3 MB: several 1 MiB parts
    return path


@pytest.mark.parametrize("change", ["grow", "shrink", "rewrite"])
def test_a_source_that_changes_during_a_multipart_upload_fails_and_is_cancelled(
    hook, emulator, tmp_path, change
):
    path = _big(tmp_path)
    original = path.read_bytes()
    created: list[str] = []
    files_before = {f["id"] for f in emulator.store.list_files()}

    def on_created(upload_id: str) -> None:
        created.append(upload_id)
        if change == "grow":
            with path.open("ab") as out:
                out.write(b"\n" * 1024 * 1024)
        elif change == "shrink":
            with path.open("r+b") as out:
                out.truncate(len(original) - 10)
        else:  # same size, new content and a new modification time
            path.write_bytes(original[::-1])
            os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))

    with pytest.raises(AzureOpenAISourceChangedError, match="source changed during upload"):
        hook.upload_multipart(
            source=path, purpose="fine-tune", part_size=1024 * 1024, on_upload_created=on_created
        )
    assert emulator.store.get_upload(created[0])["status"] == "cancelled"
    assert {f["id"] for f in emulator.store.list_files()} == files_before


class _ChangingStream(io.BytesIO):
    """A seekable source that shrinks or grows right after its first read: a file being rewritten."""

    def __init__(self, data: bytes, change: str) -> None:
        super().__init__(data)
        self.change = change
        self.reads = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.reads += 1
        if self.reads == 2:  # the first read was the JSON Lines check
            position = self.tell()
            if self.change == "shrink":
                self.truncate(len(self.getvalue()) // 2)
            else:
                self.seek(0, io.SEEK_END)
                self.write(b"\n" * 100)
            self.seek(position)
        return data


@pytest.mark.parametrize("change", ["shrink", "grow"])
def test_a_source_that_changes_during_upload_file_stores_nothing(hook, emulator, change):
    data = jsonl([CHAT_LINE] * 20000)  # ~2.8 MB: several 1 MiB chunks
    files_before = {f["id"] for f in emulator.store.list_files()}
    with pytest.raises(AzureOpenAISourceChangedError, match="source changed during upload"):
        hook.upload_file(source=_ChangingStream(data, change), purpose="fine-tune", filename="changing.jsonl")
    assert {f["id"] for f in emulator.store.list_files()} == files_before


# ------------------------------------------------------------------------------------------ 3. secrets
def _texts_of(exc: BaseException) -> str:
    return f"{exc}\n{exc!r}\n{exc.args!r}\n{getattr(exc, 'message', '')}"


@pytest.mark.parametrize(
    "host",
    [
        f"http://:{CANARY}@127.0.0.1:1",
        f"https://user:{CANARY}@example.openai.azure.com",
        f"https://example.openai.azure.com/?sig={CANARY}",
        f"ftp://user:{CANARY}@example.com",
        f"https://example.openai.azure.com/#{CANARY}",
        f"user:{CANARY}@example.openai.azure.com",
    ],
)
def test_configuration_errors_never_echo_endpoint_secrets(monkeypatch, host):
    set_connection(monkeypatch, "aoai_leaky", host=host, password=API_KEY)
    hook = AzureOpenAIHook(aoai_conn_id="aoai_leaky")
    with pytest.raises(AzureOpenAIConfigError) as caught:
        hook.get_file(file_id="file-1")
    assert CANARY not in _texts_of(caught.value)
    ok, message = hook.test_connection()
    assert not ok and CANARY not in message


def test_an_fsspec_source_error_never_echoes_its_sas(hook):
    source = f"https://acct.blob.core.windows.net/c/x.jsonl?sv=2024&sig={CANARY}"
    with pytest.raises(AzureOpenAIError) as caught:
        hook.upload_file(source=source, purpose="fine-tune")
    assert CANARY not in _texts_of(caught.value)


def test_a_service_error_that_echoes_the_key_is_redacted(monkeypatch, capfd, caplog):
    caplog.set_level("DEBUG")
    with MisbehavingService() as service:
        echo = {
            "error": {"code": "badKey", "message": f"key {API_KEY} is wrong; see https://x/?sig={CANARY}"}
        }
        service.answer = Answer(401, json.dumps(echo).encode())
        hook = _hook_for(service.url)
        with pytest.raises(AzureOpenAIError) as caught:
            hook.list_files()
        ok, message = hook.test_connection()
    output = capfd.readouterr()
    everything = _texts_of(caught.value) + message + output.out + output.err + caplog.text
    assert not ok and caught.value.status == 401
    assert API_KEY not in everything and CANARY not in everything


def test_url_userinfo_and_sas_in_a_content_url_stay_out_of_messages(hook, emulator):
    with pytest.raises(AzureOpenAIInvalidArgumentError) as caught:
        hook.import_file(
            content_url=f"https://user:{CANARY}@acct.blob.core.windows.net/x?sig={CANARY}",
            filename="x.jsonl",
            purpose="fine-tune",
        )
    assert CANARY not in _texts_of(caught.value)


@pytest.mark.parametrize(
    "text",
    [
        f"x://user:{CANARY}@host/a",  # a one-letter scheme
        f"{'a' * 20}://user:{CANARY}@host/a",  # a long one
        f"1http://user:{CANARY}@host/a",  # glued to what precedes it
        f"https://user:p({CANARY}@host/a",  # a "(" in the password ends the URL early
        f"https://user:p'{CANARY}@host/a",
        f"see ?{'n' * 100}={CANARY}",  # a long parameter name
        f"x?sig={CANARY}",
        f"sv=2022-11-02&sr=b&sig={CANARY}",  # a SAS token without its "?"
    ],
)
def test_the_redaction_rule_removes_unregistered_secrets_in_every_url_shape(text):
    from airflow_provider_aoai.redaction import redact, redact_encoded

    assert CANARY not in redact(text)
    assert CANARY not in redact_encoded(quote(quote(text, safe=""), safe=""))  # percent-encoded twice


# ------------------------------------------------------------------------------------------ 4. downloads
@pytest.fixture
def stored_file(hook, chat_file):
    return hook.upload_file(source=chat_file, purpose="assistants")


def test_a_planted_part_symlink_is_never_written_through(hook, stored_file, downloads):
    tmp_path = downloads
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    destination = tmp_path / "out.jsonl"
    (tmp_path / "out.jsonl.part").symlink_to(victim)
    hook.download_file(file_id=stored_file["id"], destination=destination)
    assert victim.read_text() == "precious"
    assert destination.read_bytes().startswith(b'{"messages"')
    assert (tmp_path / "out.jsonl.part").is_symlink()


@pytest.fixture
def downloads(tmp_path) -> Path:
    folder = tmp_path / "downloads"
    folder.mkdir()
    return folder


def test_a_failed_download_keeps_the_users_files(hook, emulator, stored_file, downloads):
    tmp_path = downloads
    destination = tmp_path / "out.jsonl"
    destination.write_text("older version")
    (tmp_path / "out.jsonl.part").write_text("the user's own file")
    emulator.faults.inject("files.content", status=500, count=10)
    with pytest.raises(AzureOpenAIError):
        hook.download_file(file_id=stored_file["id"], destination=destination)
    assert destination.read_text() == "older version"
    assert (tmp_path / "out.jsonl.part").read_text() == "the user's own file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl", "out.jsonl.part"]


def test_a_missing_file_leaves_no_temporary_file(hook, downloads):
    tmp_path = downloads
    with pytest.raises(AzureOpenAINotFoundError):
        hook.download_file(file_id="file-does-not-exist", destination=tmp_path / "out.jsonl")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "destination",
    [
        lambda p: p,  # a directory
        lambda p: "",
        lambda p: None,
        lambda p: p / "missing-dir" / "out.jsonl",
        lambda p: str(p) + "/",
        lambda p: 42,
    ],
    ids=["directory", "empty", "none", "missing-directory", "trailing-slash", "int"],
)
def test_bad_destinations_are_refused_before_any_request(hook, emulator, stored_file, downloads, destination):
    tmp_path = downloads
    before = requests_served(emulator)
    with pytest.raises(AzureOpenAIInvalidArgumentError, match="destination"):
        hook.download_file(file_id=stored_file["id"], destination=destination(tmp_path))
    assert requests_served(emulator) == before
    assert list(tmp_path.iterdir()) == []


def _memory_path(path: str):
    import fsspec
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    try:
        from airflow.sdk.io import attach
    except ImportError:  # Airflow 2
        from airflow.io.store import attach
    # Under a connection id of its own: a bare "memory" store may already be cached without a filesystem
    # (another test builds ObjectStoragePath("memory://...") to check the unregistered-scheme error).
    attach(protocol="memory", conn_id="aoai_tests_memory", fs=fsspec.filesystem("memory"))
    return ObjectStoragePath(f"memory://{path}", conn_id="aoai_tests_memory")


def test_an_object_storage_404_leaves_no_object(hook):
    target = _memory_path("trust-404/out.jsonl")
    with pytest.raises(AzureOpenAINotFoundError):
        hook.download_file(file_id="file-does-not-exist", destination=target)
    assert not target.exists()
    assert not target.fs.find("/trust-404")


def test_an_object_storage_download_replaces_only_on_success(hook, emulator, stored_file):
    target = _memory_path("trust-ok/out.jsonl")
    target.write_bytes(b"older version")
    emulator.faults.inject("files.content", drop=True, count=10)
    with pytest.raises(AzureOpenAIError):
        hook.download_file(file_id=stored_file["id"], destination=target)
    assert target.read_bytes() == b"older version"
    assert target.fs.find("/trust-ok") == ["/trust-ok/out.jsonl"]
    emulator.faults.clear()
    result = hook.download_file(file_id=stored_file["id"], destination=target)
    assert target.read_bytes().startswith(b'{"messages"') and result["bytes"] == len(target.read_bytes())
    assert target.fs.find("/trust-ok") == ["/trust-ok/out.jsonl"]


# ------------------------------------------------------------------------------------------ 5. judged first
@pytest.mark.parametrize(
    ("build", "argument"),
    [
        (lambda: _upload_op(poll_interval=0, wait_for_processing=True), "poll_interval"),
        (lambda: _upload_op(poll_interval=-1), "poll_interval"),
        (lambda: _upload_op(poll_interval=math.nan), "poll_interval"),
        (lambda: _import_op(wait_timeout=0), "wait_timeout"),
        (lambda: _import_op(wait_timeout=math.inf), "wait_timeout"),
        (lambda: _multipart_op(progress_interval="5"), "progress_interval"),
        (lambda: _multipart_op(part_size=10), "part_size"),
        (lambda: _multipart_op(max_concurrency=0), "max_concurrency"),
        (lambda: _multipart_op(max_concurrency=True), "max_concurrency"),
        (lambda: _upload_op(wait_for_processing="yes"), "wait_for_processing"),
        (lambda: _upload_op(deferrable="no"), "deferrable"),
        (lambda: _upload_op(force_new=1), "force_new"),
    ],
)
def test_operators_refuse_bad_arguments_when_built(build, argument):
    with pytest.raises(AzureOpenAIInvalidArgumentError) as caught:
        build()
    assert caught.value.argument == argument


def _upload_op(**kwargs):
    from airflow_provider_aoai.operators import AzureOpenAIUploadFileOperator

    return AzureOpenAIUploadFileOperator(task_id="t", source="x.jsonl", purpose="fine-tune", **kwargs)


def _import_op(**kwargs):
    from airflow_provider_aoai.operators import AzureOpenAIImportFileOperator

    return AzureOpenAIImportFileOperator(
        task_id="t", content_url="https://a/b", filename="b.jsonl", purpose="fine-tune", **kwargs
    )


def _multipart_op(**kwargs):
    from airflow_provider_aoai.operators import AzureOpenAIMultipartUploadOperator

    return AzureOpenAIMultipartUploadOperator(task_id="t", source="x.jsonl", purpose="fine-tune", **kwargs)


def test_the_trigger_refuses_negative_intervals_and_floors_small_ones():
    from airflow_provider_aoai.triggers import AzureOpenAIFileStatusTrigger
    from airflow_provider_aoai.validation import MIN_POLL_SECONDS

    for bad in (-1, math.nan, math.inf, "5", True):
        with pytest.raises(AzureOpenAIInvalidArgumentError, match="poll_interval"):
            AzureOpenAIFileStatusTrigger(
                file_id="f", aoai_conn_id="c", poll_interval=bad, end_time=time.time()
            )
    trigger = AzureOpenAIFileStatusTrigger(
        file_id="f", aoai_conn_id="c", poll_interval=0, end_time=time.time()
    )
    assert trigger.poll_interval == MIN_POLL_SECONDS
    with pytest.raises(AzureOpenAIInvalidArgumentError, match="end_time"):
        AzureOpenAIFileStatusTrigger(file_id="f", aoai_conn_id="c", poll_interval=1, end_time=math.nan)


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda h, p: h.wait_for_file(file_id="f", timeout=math.nan), "timeout"),
        (lambda h, p: h.wait_for_file(file_id="f", poll_interval=0), "poll_interval"),
        (lambda h, p: h.list_files(purpose="FINE-TUNE"), "purpose"),
        (lambda h, p: h.add_upload_part(upload_id="u", data=b"x" * (512 * 1024 * 1024 + 1)), "data"),
        (
            lambda h, p: h.import_file(content_url="https://a/b\nc", filename="f", purpose="fine-tune"),
            "content_url",
        ),
        (
            lambda h, p: h.import_file(content_url="https://a:99999/b", filename="f", purpose="fine-tune"),
            "content_url",
        ),
        (
            lambda h, p: h.import_file(content_url="https://a b/c", filename="f", purpose="fine-tune"),
            "content_url",
        ),
        (
            lambda h, p: h.import_file(content_url="https://a/b", filename="x\r\ny", purpose="fine-tune"),
            "filename",
        ),
        (lambda h, p: h.upload_file(source=p, purpose="fine-tune", filename="x\ny.jsonl"), "filename"),
        (
            lambda h, p: h.upload_multipart(source=p, purpose="fine-tune", progress_interval="5"),
            "progress_interval",
        ),
        (lambda h, p: h.upload_multipart(source=p, purpose="fine-tune", filename="a/b.jsonl"), "filename"),
        (
            lambda h, p: h.create_upload(filename="a\x00", purpose="fine-tune", total_bytes=1, mime_type="t"),
            "filename",
        ),
        (
            lambda h, p: h.create_upload(filename="a", purpose="fine-tune", total_bytes=1, mime_type="t\n"),
            "mime_type",
        ),
        (lambda h, p: h.download_file(file_id="f", destination=None), "destination"),
    ],
)
def test_hook_arguments_are_judged_before_any_request(hook, emulator, chat_file, call, argument):
    before = requests_served(emulator)
    with pytest.raises(AzureOpenAIInvalidArgumentError) as caught:
        call(hook, chat_file)
    assert caught.value.argument == argument
    assert requests_served(emulator) == before


# ------------------------------------------------------------------------------------------ 6. connections
@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"timeout": 0}, "timeout"),
        ({"timeout": "0"}, "timeout"),
        ({"timeout": "nan"}, "timeout"),
        ({"timeout": -5}, "timeout"),
        ({"timeout": True}, "timeout"),
        ({"max_retries": -1}, "max_retries"),
        ({"max_retries": "many"}, "max_retries"),
        ({"max_retries": 2.5}, "max_retries"),
        ({"retry_backoff": -1}, "retry_backoff"),
        ({"retry_backoff": "inf"}, "retry_backoff"),
        (
            {
                "auth_type": "client_secret",
                "tenant_id": "bad tenant!",
                "client_id": "c",
                "client_secret": "not-a-real-secret-value",
            },
            "tenant_id",
        ),
        (
            {
                "auth_type": "client_secret",
                "tenant_id": "t",
                "client_id": "c",
                "client_secret": "not-a-real-secret-value",
                "authority_host": "http://login.example.com",
            },
            "authority_host",
        ),
        ({"api_version": "latest"}, "api_version"),
        ({"auth_type": "magic"}, "auth_type"),
    ],
)
def test_bad_connection_fields_are_config_errors_naming_the_field(emulator, monkeypatch, extra, field):
    set_connection(monkeypatch, "aoai_bad", host=emulator.url, password=API_KEY, extra=extra)
    hook = AzureOpenAIHook(aoai_conn_id="aoai_bad")
    before = requests_served(emulator)
    with pytest.raises(AzureOpenAIConfigError) as caught:
        hook.list_files()
    assert "aoai_bad" in str(caught.value) and field in str(caught.value)
    ok, message = hook.test_connection()
    assert not ok and field in message
    assert requests_served(emulator) == before


@pytest.mark.parametrize("char", ["\x7f", "\x9b", "\x85", "\u2028", "\x00"])
@pytest.mark.parametrize("field", ["host", "login"])
def test_control_characters_in_connection_fields_are_config_errors(emulator, monkeypatch, char, field):
    """The one control-character rule (models.CONTROL_CHARACTERS) also guards the connection's fields."""
    values = {"host": emulator.url, "password": API_KEY}
    if field == "host":
        values["host"] = f"{emulator.url}/a{char}b"
    else:
        values["login"] = f"client{char}id"
        values["extra"] = {"auth_type": "client_secret", "tenant_id": "t"}
    set_connection(monkeypatch, "aoai_ctl", **values)
    before = requests_served(emulator)
    with pytest.raises(AzureOpenAIConfigError) as caught:
        AzureOpenAIHook(aoai_conn_id="aoai_ctl").list_files()
    assert "control characters" in str(caught.value) and "aoai_ctl" in str(caught.value)
    assert requests_served(emulator) == before


def test_a_port_out_of_range_is_a_config_error(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_AOAI_PORT",
        json.dumps({"conn_type": "aoai", "host": "http://127.0.0.1:99999", "password": "k"}),
    )
    with pytest.raises(AzureOpenAIConfigError, match="port"):
        AzureOpenAIHook(aoai_conn_id="aoai_port").list_files()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize(
    ("host", "cause"),
    [
        (lambda: f"http://127.0.0.1:{_free_port()}", "refused"),
        (lambda: "https://no-such-host.invalid", "could not be resolved"),
    ],
    ids=["refused", "unresolvable"],
)
def test_test_connection_answers_at_once_naming_endpoint_and_cause(monkeypatch, host, cause):
    endpoint = host()
    set_connection(monkeypatch, "aoai_down", host=endpoint, password=API_KEY, extra={"max_retries": 5})
    started = time.monotonic()
    ok, message = AzureOpenAIHook(aoai_conn_id="aoai_down").test_connection()
    assert not ok and cause in message and endpoint.split("://")[1].split(":")[0] in message
    assert time.monotonic() - started < 3


def test_test_connection_names_a_timeout(monkeypatch):
    with socket.socket() as silent:  # accepts connections (backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        set_connection(monkeypatch, "aoai_silent", host=url, password=API_KEY, extra={"timeout": 0.5})
        ok, message = AzureOpenAIHook(aoai_conn_id="aoai_silent").test_connection()
    assert not ok and "timed out" in message


def test_test_connection_never_raises_for_a_missing_connection():
    ok, message = AzureOpenAIHook(aoai_conn_id="aoai_does_not_exist").test_connection()
    assert not ok and "aoai_does_not_exist" in message


# ------------------------------------------------------------------------------------------ 7. misbehaving
@pytest.mark.parametrize(
    "answer",
    [
        Answer(200, b"<html><body>Gateway</body></html>", "text/html"),
        Answer(200, b"[1, 2, 3]"),
        Answer(200, b'"just a string"'),
        Answer(200, b"{not json"),
        Answer(
            302, b"", headers={"Location": "https://elsewhere.example.com/steal", "apim-request-id": "r-302"}
        ),
    ],
    ids=["html", "array", "string", "broken", "redirect"],
)
def test_a_success_that_is_not_the_promised_object_is_a_typed_error(answer):
    with MisbehavingService() as service:
        service.answer = answer
        hook = _hook_for(service.url)
        with pytest.raises(AzureOpenAIResponseError) as caught:
            hook.list_files()
    assert caught.value.status == answer.status and caught.value.request_id
    assert len(service.seen) == 1  # not retried, and a redirect is never followed


def test_a_huge_error_message_is_truncated():
    with MisbehavingService() as service:
        service.answer = Answer(
            400, json.dumps({"error": {"code": "big", "message": "x" * 10_000_000}}).encode()
        )
        hook = _hook_for(service.url)
        with pytest.raises(AzureOpenAIError) as caught:
            hook.list_files()
    assert len(str(caught.value)) < 1200 and len(caught.value.message) < 1200
    assert caught.value.status == 400 and caught.value.code == "big"
