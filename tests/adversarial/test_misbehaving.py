"""A misbehaving service (README "An answer must be what was asked for", "Errors", test_connection's
promise; issue 7 section 7). Real HTTP: tests/misbehaving.py scripts answers, tests/adversarial/hostile.py trickles
or never ends them, the emulator plays the lost-complete cases."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from airflow_provider_aoai.credentials import ApiKeyAuth
from airflow_provider_aoai.exceptions import (
    AzureOpenAIBadRequestError,
    AzureOpenAIConflictError,
    AzureOpenAIConnectionError,
    AzureOpenAIError,
    AzureOpenAIResponseError,
    AzureOpenAIUploadError,
)
from airflow_provider_aoai.http.client import AzureOpenAIClient
from airflow_provider_aoai.http.policy import Retry
from airflow_provider_aoai.models import ObjectKind
from tests.adversarial.helpers import md5
from tests.adversarial.hostile import HostileService, RawService, endless, json_answer, trickle
from tests.conftest import API_KEY, CHAT_LINE, jsonl, set_connection
from tests.misbehaving import Answer, MisbehavingService

MiB = 1024 * 1024


@pytest.fixture
def service(monkeypatch):
    with MisbehavingService() as svc:
        set_connection(
            monkeypatch,
            "adv_bad",
            host=svc.url,
            password=API_KEY,
            extra={"max_retries": 2, "retry_backoff": 0.01, "timeout": 5},
        )
        yield svc


def _hook(conn_id: str = "adv_bad"):
    from airflow_provider_aoai.hooks import AzureOpenAIHook

    return AzureOpenAIHook(aoai_conn_id=conn_id)


def _file(**fields) -> bytes:
    return json.dumps(
        {
            "object": "file",
            "id": "file-1",
            "bytes": 1,
            "created_at": 1,
            "filename": "a",
            "purpose": "fine-tune",
            **fields,
        }
    ).encode()


# ------------------------------------------------------------------------------------------ Retry-After
@pytest.mark.parametrize("header", ["retry-after", "retry-after-ms"])
@pytest.mark.parametrize("with_stop", [False, True], ids=["no stop", "stop event"])
def test_a_nan_retry_after_is_a_typed_error(service, header, with_stop, tmp_path):
    """FINDING: `Retry-After: nan` parses as float('nan'); max(nan, 0.0) is nan and min(nan, 60) is nan, so
    time.sleep(nan) / Event.wait(nan) raise a raw ValueError("Invalid value NaN")."""
    service.answer = Answer(status=503, body=b"{}", headers={header: "nan"})
    with pytest.raises(AzureOpenAIError):
        if with_stop:  # the retry loop waits on the event: Event.wait(nan)
            _hook().download_file(file_id="file-1", destination=tmp_path / "out", stop=threading.Event())
        else:  # time.sleep(nan)
            _hook().get_file(file_id="file-1")


@pytest.mark.parametrize(
    "value", ["-1", "Wed, 21 Oct 2015 07:28:00 GMT", "Wed, 99 Oct 2015 07:28:00 GMT", "garbage", "0"]
)
def test_held_odd_retry_after_values_do_not_stall(service, value):
    service.answer = Answer(status=503, body=b"{}", headers={"retry-after": value})
    started = time.monotonic()
    with pytest.raises(AzureOpenAIError):
        _hook().get_file(file_id="file-1")
    assert time.monotonic() - started < 5 and len(service.seen) == 3


# ------------------------------------------------------------------------------------------ wrong objects
def test_a_data_plane_file_without_status_is_not_processed(service):
    """FINDING: a data-plane answer {"object": "file", "id": "file-1"} (no status, or status null) is taken
    for a *processed* file -- FileStatus.of treats a missing status as "ready" on every surface, though
    only Foundry's FileInfo may omit it. wait_for_file (and the sensor) succeed at once."""
    service.answer = Answer(body=json.dumps({"object": "file", "id": "file-1"}).encode())
    with pytest.raises(AzureOpenAIError):
        _hook().wait_for_file(file_id="file-1", poll_interval=0.05, timeout=0.5)


def test_a_completed_upload_must_name_its_file(service):
    """FINDING: a completed Upload whose file id is "" passes check_object (it only asks for a str); the
    multipart operator would return it and push "" as the file id."""
    service.answer = Answer(
        body=json.dumps(
            {"object": "upload", "id": "up-1", "status": "completed", "file": {"id": ""}}
        ).encode()
    )
    with pytest.raises(AzureOpenAIResponseError):
        _hook().complete_upload(upload_id="up-1", part_ids=["p"])


def test_a_part_of_another_upload_is_not_accepted(service):
    """LOW: a part answer whose upload_id is another upload's is accepted (only the object kind is checked)."""
    service.answer = Answer(
        body=json.dumps({"object": "upload.part", "id": "p", "upload_id": "OTHER"}).encode()
    )
    with pytest.raises(AzureOpenAIResponseError):
        _hook().add_upload_part(upload_id="up-1", data=b"x")


def test_a_created_object_with_an_unusable_id_is_a_response_error(service):
    """LOW: create_upload answering id ".." succeeds; the next call then blames the caller's *argument*
    ("upload_id: '..' is not an id") and the upload is not cancelled. Same for import_file ("../x")."""
    service.answer = Answer(body=json.dumps({"object": "upload", "id": "..", "status": "pending"}).encode())
    with pytest.raises(AzureOpenAIResponseError):
        _hook().create_upload(filename="a.jsonl", purpose="fine-tune", total_bytes=5, mime_type="text/jsonl")


def test_a_list_by_ids_with_odd_ids_keeps_only_what_was_asked_for(service):
    """A list whose items carry ids of any JSON type (a list, a number, none) or no kind: read by ids it
    keeps the asked-for files only, whether or not they say they are files, and raises nothing but our
    errors."""
    items = [
        {"object": "file", "id": ["file-1"]},
        {"object": "file", "id": 7},
        {"object": "file"},
        {"object": "file", "id": "file-1", "status": "processed"},
        {"id": "file-2"},
        {"id": "file-3"},
    ]
    service.answer = Answer(body=json.dumps({"object": "list", "data": items}).encode())
    assert _hook().list_files(ids=["file-1", "file-2"]) == [items[3], items[4]]
    # a page that says there is more but whose last file has no usable id cannot be followed
    service.answer = Answer(body=json.dumps({"object": "list", "data": items[:2], "has_more": True}).encode())
    with pytest.raises(AzureOpenAIResponseError, match="paging"):
        _hook().list_files(ids=["file-1"])


def _pages(pages: dict[str | None, dict]):
    """An answer per ``after`` cursor of a file list."""
    from urllib.parse import parse_qs, urlsplit

    def answer(path: str) -> Answer:
        after = parse_qs(urlsplit(path).query).get("after", [None])[0]
        return Answer(body=json.dumps(pages[after]).encode())

    return answer


def _f(file_id, **fields) -> dict:
    return {"object": "file", "id": file_id, "status": "processed", **fields}


def test_a_list_by_ids_keeps_its_files_whole_whatever_they_hold(service):
    """Found by this round's adversarial pass: a file object inside a kept file was dropped with the others
    (the shared stand-in handed out inside the result), and a file beside ``data`` set the paging cursor."""
    from airflow_provider_aoai.resources.files import _OnlyFiles

    nested = _f("file-a", meta={"object": "file", "id": "inner"}, more=[{"object": "file", "id": "x"}])
    service.answer = _pages(
        {
            None: {"object": "list", "data": [nested, _f("file-b")], "has_more": True, "extra": _f("zzz")},
            "file-b": {"object": "list", "data": [_f("file-c")]},
        }
    )
    files = _hook().list_files(ids=["file-a", "file-c"])
    assert files == [nested, _f("file-c")]
    assert _OnlyFiles.DROPPED == {"object": "file"}
    assert all(value is not _OnlyFiles.DROPPED for file in files for value in file.values())


@pytest.mark.timeout(60)
def test_a_list_whose_pages_go_round_is_refused(service):
    """Found by this round's adversarial pass: cursors that alternate (or never end) paged for ever, in the
    triggerer too; every cursor seen is remembered."""
    service.answer = _pages(
        {
            None: {"object": "list", "data": [_f("x")], "has_more": True},
            "x": {"object": "list", "data": [_f("y")], "has_more": True},
            "y": {"object": "list", "data": [_f("x")], "has_more": True},
        }
    )
    for ids in (None, ["file-a"]):
        before = len(service.seen)
        with pytest.raises(AzureOpenAIResponseError, match="paging does not advance"):
            _hook().list_files(ids=ids)
        assert len(service.seen) - before == 3


def test_an_answer_nested_too_deeply_is_a_response_error(service):
    """Found by this round's adversarial pass: a body nested 100,000 deep raised RecursionError out of the
    client (and out of every poll of a triggerer's list), on success and error answers alike."""
    deep = b'{"object": "list", "data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    service.answer = Answer(body=deep)
    with pytest.raises(AzureOpenAIResponseError, match="nested too deeply"):
        _hook().list_files(ids=["file-a"])
    service.answer = Answer(status=400, body=b'{"error": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    with pytest.raises(AzureOpenAIBadRequestError):
        _hook().get_file(file_id="file-a")
    service.answer = Answer(body=json.dumps(_f("file-z")).encode())  # a file where a list belongs
    with pytest.raises(AzureOpenAIResponseError, match="kind 'list', got 'file'"):
        _hook().list_files(ids=["file-a"])


# ------------------------------------------------------------------------------------------ slow and huge answers
def test_test_connection_answers_within_15_seconds_even_from_a_slowloris(monkeypatch):
    """FINDING: README: test_connection "waits at most 15 s". requests' timeout is per socket read, so an
    answer that trickles one byte a second never times out: a 27-byte list takes 26 s, a longer one as
    long as the server likes (the same holds for every call: there is no overall deadline)."""
    body = b'{"object":"list","data":[]}'
    with HostileService(trickle(body, every=1.0)) as hostile:
        set_connection(monkeypatch, "adv_slow", host=hostile.url, password=API_KEY, extra={"max_retries": 0})
        started = time.monotonic()
        _hook("adv_slow").test_connection()
        elapsed = time.monotonic() - started
    assert elapsed < 16, f"test_connection took {elapsed:.0f}s"


def test_an_endless_error_body_is_not_read_to_its_end(monkeypatch):
    """FINDING: an error answer is read whole (response.json()) before its message is cut to 1 KB. A body of
    64 MiB is read completely (and about 3.5x its size is held in memory: 256 MiB of error body took the
    worker to ~890 MB RSS); a proxy that never ends the body exhausts the worker's memory."""
    with HostileService(endless(status=500, limit=64 * MiB)) as hostile:
        set_connection(monkeypatch, "adv_huge", host=hostile.url, password=API_KEY, extra={"max_retries": 0})
        with pytest.raises(AzureOpenAIError) as caught:
            _hook("adv_huge").list_files()
        sent = hostile.body_bytes_sent
    assert len(str(caught.value)) < 2048
    assert sent < 16 * MiB, f"the client read {sent // MiB} MiB of the error body"


def _client_to(url: str, monkeypatch, transport: str) -> AzureOpenAIClient:
    """A client of ``url``: directly (keep-alive connections) or through it as an HTTP proxy (requests)."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    endpoint = url
    if transport == "proxy":
        monkeypatch.setenv("HTTP_PROXY", url)
        endpoint = "http://localhost:1"  # never connected to: the proxy is asked for it
    return AzureOpenAIClient(endpoint=endpoint, auth=ApiKeyAuth(API_KEY), max_retries=1, backoff_seconds=0)


@pytest.mark.parametrize("transport", ["direct", "proxy"])
def test_an_endless_success_is_not_read_to_its_end(monkeypatch, transport):
    """A success answer that never ends (a broken proxy) would fill the worker's, or the triggerer's,
    memory: it is read up to 64 MiB, then refused, and not asked again."""
    with HostileService(endless(status=200)) as hostile:
        client = _client_to(hostile.url, monkeypatch, transport)
        with pytest.raises(AzureOpenAIResponseError) as caught:
            client.request_object("GET", ("files", "file-1"), expect=ObjectKind.FILE, expect_id="file-1")
        sent = hostile.body_bytes_sent
        assert hostile.requests == 1
    assert caught.value.code == "answerTooLarge"
    assert caught.value.status == 200
    assert 64 * MiB <= sent < 96 * MiB, f"the client took {sent // MiB} MiB"


def cut_short_once(body: bytes):
    """The first answer announces ``body`` but the connection closes after 5 bytes; later ones are whole."""
    answered = []

    def serve(handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body if answered else body[:5])
        if not answered:
            handler.close_connection = True
        answered.append(True)

    return serve


@pytest.mark.parametrize("transport", ["direct", "proxy"])
def test_a_success_cut_short_is_a_connection_error(monkeypatch, transport):
    """A body that ends before its Content-Length is a broken connection, not a malformed answer: a read
    is asked again, a create is not (the service may have acted on it)."""
    body = json.dumps({"id": "file-1", "object": "file", "bytes": 1, "status": "processed"}).encode()
    with HostileService(cut_short_once(body)) as hostile:
        client = _client_to(hostile.url, monkeypatch, transport)
        file = client.request_object("GET", ("files", "file-1"), expect=ObjectKind.FILE, expect_id="file-1")
        assert file["id"] == "file-1"
        assert hostile.requests == 2
    with HostileService(cut_short_once(body)) as hostile:
        client = _client_to(hostile.url, monkeypatch, transport)
        with pytest.raises(AzureOpenAIConnectionError, match="may have acted"):
            client.request("POST", ("files",), retry=Retry.CREATE, json={})
        assert hostile.requests == 1


def test_held_a_10_mb_error_message_is_cut(service):
    service.answer = Answer(
        status=400, body=json.dumps({"error": {"code": "x", "message": "m" * 10_000_000}}).encode()
    )
    with pytest.raises(AzureOpenAIError) as caught:
        _hook().list_files()
    assert len(str(caught.value)) < 2048


@pytest.mark.parametrize(
    "answer",
    [
        Answer(status=307, body=b"", headers={"Location": "http://evil.example/"}),
        Answer(body=b"<html>hello</html>", content_type="text/html"),
        Answer(body=b"[1, 2]"),
        Answer(body=b'{"object": "list", "data": []}'),
        Answer(body=_file(id="file-2", status="processed")),
        Answer(status=204, body=b""),
    ],
    ids=["redirect", "html", "array", "list for a file", "another id", "204"],
)
def test_held_wrong_answers_are_response_errors(service, answer):
    service.answer = answer
    with pytest.raises(AzureOpenAIResponseError) as caught:
        _hook().get_file(file_id="file-1")
    assert caught.value.status == answer.status
    assert len(service.seen) == 1  # never followed, never retried


# ------------------------------------------------------------------------------------------ lost completes (emulator)
def _prepared(hook, data: bytes, name: str):
    upload = hook.create_upload(
        filename=name, purpose="fine-tune", total_bytes=len(data), mime_type="text/jsonl"
    )
    part = hook.add_upload_part(upload_id=upload["id"], data=data)
    return upload, [part["id"]]


def test_held_409_on_complete_with_no_file_raises(hook, emulator):
    data = jsonl([CHAT_LINE] * 3)
    upload, parts = _prepared(hook, data, "adv-409-nofile.jsonl")
    hook.cancel_upload(upload_id=upload["id"])
    with pytest.raises(AzureOpenAIConflictError):
        hook.complete_upload(upload_id=upload["id"], part_ids=parts, md5=md5(data), upload=upload)


def test_held_a_lost_complete_finds_its_file_among_twins_by_md5(hook, emulator):
    ours = jsonl(
        [{"messages": [{"role": "user", "content": "ours-1"}, {"role": "assistant", "content": "a"}]}] * 5
    )
    twin = jsonl(
        [{"messages": [{"role": "user", "content": "twin-2"}, {"role": "assistant", "content": "a"}]}] * 5
    )
    upload, parts = _prepared(hook, ours, "adv-twins.jsonl")
    other, other_parts = _prepared(hook, twin, "adv-twins.jsonl")
    emulator.faults.inject("uploads.complete", drop=True, after=True, path_contains=upload["id"])
    hook.complete_upload(upload_id=other["id"], part_ids=other_parts, md5=md5(twin))
    done = hook.complete_upload(upload_id=upload["id"], part_ids=parts, md5=md5(ours), upload=upload)
    stream, _ = emulator.store.open_content(done["file"]["id"])
    with stream:
        assert stream.read() == ours


def test_held_a_lost_complete_with_identical_twins_refuses_to_guess(hook, emulator):
    data = jsonl(
        [{"messages": [{"role": "user", "content": "same"}, {"role": "assistant", "content": "a"}]}] * 5
    )
    upload, parts = _prepared(hook, data, "adv-same.jsonl")
    other, other_parts = _prepared(hook, data, "adv-same.jsonl")
    emulator.faults.inject("uploads.complete", drop=True, after=True, path_contains=upload["id"])
    hook.complete_upload(upload_id=other["id"], part_ids=other_parts, md5=md5(data))
    with pytest.raises(AzureOpenAIUploadError, match="cannot tell"):
        hook.complete_upload(upload_id=upload["id"], part_ids=parts, md5=md5(data), upload=upload)


def _file_named_in(head: bytes) -> dict:
    file_id = head.split(b" ")[1].split(b"?")[0].rsplit(b"/", 1)[1].decode()
    return {"id": file_id, "object": "file", "bytes": 1, "status": "processed"}


def early_hints_first(connection, service) -> None:
    """Every answer comes after a 103 Early Hints (as a CDN in front of a service may send), keep-alive."""
    while (head := service.read_head(connection)) is not None:
        interim = b"HTTP/1.1 103 Early Hints\r\nLink: </hint>; rel=preload\r\n\r\n"
        connection.sendall(interim + json_answer("200 OK", _file_named_in(head)))


@pytest.mark.parametrize("transport", ["direct", "proxy"])
def test_interim_answers_are_skipped_and_each_request_gets_its_own_answer(monkeypatch, transport):
    """http.client skips only 100 Continue: a 103 was taken for the answer, and the real one, still on the
    connection, became the answer to the next request (file-A's answer to a request for file-B)."""
    with RawService(early_hints_first) as service:
        client = _client_to(service.url, monkeypatch, transport)
        for file_id in ("file-A", "file-B", "file-C"):
            file = client.request_object("GET", ("files", file_id), expect=ObjectKind.FILE, expect_id=file_id)
            assert file["id"] == file_id
        created = client.request("POST", ("files", "file-D"), retry=Retry.CREATE, json={})
        assert created.status_code == 200 and created.json()["id"] == "file-D"


def bad_chunk_size(connection, service) -> None:
    if service.read_head(connection) is not None:
        connection.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            b'-5\r\n{"a":\r\n0\r\n\r\n'
        )


@pytest.mark.parametrize("transport", ["direct", "proxy", "download"])
def test_a_negative_chunk_size_is_a_connection_error(monkeypatch, transport, tmp_path):
    with RawService(bad_chunk_size) as service:
        client = _client_to(service.url, monkeypatch, "direct" if transport == "download" else transport)
        with pytest.raises(AzureOpenAIConnectionError, match="framing is not valid HTTP"):
            if transport == "download":
                client.download(("files", "file-1", "content"), lambda: (tmp_path / "out").open("wb"))
            else:
                client.request_object("GET", ("files", "file-1"), expect=ObjectKind.FILE, expect_id="file-1")


def too_large_before_reading(connection, service) -> None:
    """Answers 413 from the head alone and hangs up with the body unread (a gateway's limit)."""
    if service.read_head(connection) is not None:
        error = {"error": {"code": "RequestEntityTooLarge", "message": "body too large"}}
        connection.sendall(json_answer("413 Payload Too Large", error))
        connection.shutdown(socket.SHUT_WR)


@pytest.mark.parametrize("transport", ["direct", "proxy"])
def test_an_answer_given_before_the_body_was_read_is_the_answer(monkeypatch, transport):
    """The service may answer (413, 401) without reading a large body, and hang up: the sender's pipe breaks,
    but the answer is there to read. It is the error raised, and nothing is sent again."""
    body = {"part_ids": [f"part-{n:040d}" for n in range(200_000)]}  # ~9 MB: more than the socket buffers
    with RawService(too_large_before_reading) as service:
        client = _client_to(service.url, monkeypatch, transport)
        with pytest.raises(AzureOpenAIBadRequestError) as caught:
            client.request("POST", ("uploads", "upload-1", "complete"), json=body)
        assert service.connections == 1
    assert caught.value.status == 413 and caught.value.code == "RequestEntityTooLarge"


def keeps_alive(connection, service) -> None:
    while (head := service.read_request(connection)) is not None:
        connection.sendall(json_answer("200 OK", _file_named_in(head)))


def test_a_create_goes_on_a_connection_of_its_own(monkeypatch):
    """A kept-alive connection may have been dropped by a load balancer while idle (Azure's forgets a flow
    after 4 minutes and answers it with a reset): a create sent on it would fail as "may have acted" with
    nothing sent. Reads share a connection; a create opens its own."""
    with RawService(keeps_alive) as service:
        client = _client_to(service.url, monkeypatch, "direct")
        client.request("GET", ("files", "file-A"))
        client.request("GET", ("files", "file-B"))
        assert service.connections == 1
        client.request("POST", ("files", "file-C"), retry=Retry.CREATE, json={})
        assert service.connections == 2
        client.request("GET", ("files", "file-D"))
        assert service.connections == 2
