"""The public API with bad input. Promise (README "Arguments and connections are judged before the first
request", "Errors"): only the project's typed exceptions, raised before any request, naming the argument;
"no raw ValueError/TypeError/KeyError/AttributeError escapes".

Every case checks three things: the exception is an AzureOpenAIError (and, for an argument, an
AzureOpenAIInvalidArgumentError naming it), the emulator served no request, and no upload was left behind.
"""

from __future__ import annotations

import io
from datetime import timedelta

import pytest

from airflow_provider_aoai.exceptions import AzureOpenAIError, AzureOpenAIInvalidArgumentError
from tests.adversarial.helpers import requests_served
from tests.conftest import set_connection

MiB = 1024 * 1024


def _checkpoint(**overrides) -> dict:
    data = {
        "version": 1,
        "upload_id": "upload-x",
        "endpoint": "http://127.0.0.1:1",
        "filename": "f.jsonl",
        "purpose": "fine-tune",
        "part_size": MiB,
        "fingerprint": {"size": 10, "marker": None},
        "created_at": 1,
    }
    data.update(overrides)
    return data


def _text(content: str = '{"a": 1}\n'):
    return io.StringIO(content)


# (case id, argument the error must name or None for "any typed error", call(hook, chat_file, tmp_path))
CASES = [
    (
        "source ~unknown-user",
        "source",
        lambda h, f, t: h.upload_file(source="~no-such-user-adv/x.jsonl", purpose="assistants"),
    ),
    (
        "destination ~unknown-user",
        "destination",
        lambda h, f, t: h.download_file(file_id="file-x", destination="~no-such-user-adv/x"),
    ),
    (
        "source name too long",
        "source",
        lambda h, f, t: h.upload_file(source=str(t / ("a" * 300)), purpose="assistants"),
    ),
    (
        "destination name too long",
        "destination",
        lambda h, f, t: h.download_file(file_id="file-x", destination=str(t / ("a" * 300))),
    ),
    (
        "source StringIO upload_file",
        "source",
        lambda h, f, t: h.upload_file(source=_text(), purpose="assistants"),
    ),
    (
        "source StringIO fine-tune",
        "source",
        lambda h, f, t: h.upload_file(source=_text(), purpose="fine-tune"),
    ),
    (
        "source TextIOWrapper",
        "source",
        lambda h, f, t: h.upload_file(source=io.TextIOWrapper(io.BytesIO(b"x")), purpose="assistants"),
    ),
    (
        "source StringIO multipart",
        "source",
        lambda h, f, t: h.upload_multipart(source=_text(), purpose="assistants", part_size=MiB),
    ),
    (
        "resume_from parts is a list",
        "resume_from",
        lambda h, f, t: h.upload_multipart(source=f, purpose="fine-tune", resume_from=_checkpoint(parts=[1])),
    ),
    (
        "resume_from part_size 0",
        "resume_from",
        lambda h, f, t: h.upload_multipart(
            source=f, purpose="fine-tune", resume_from=_checkpoint(part_size=0)
        ),
    ),
    (
        "on_checkpoint not callable",
        "on_checkpoint",
        lambda h, f, t: h.upload_multipart(source=f, purpose="fine-tune", on_checkpoint="x"),
    ),
    (
        "on_upload_created not callable",
        "on_upload_created",
        lambda h, f, t: h.upload_multipart(source=f, purpose="fine-tune", on_upload_created=5),
    ),
    (
        "on_md5 not callable",
        "on_md5",
        lambda h, f, t: h.upload_multipart(source=f, purpose="fine-tune", on_md5="x"),
    ),
    (
        "multipart stop not an Event",
        "stop",
        lambda h, f, t: h.upload_multipart(source=f, purpose="fine-tune", stop="x"),
    ),
    (
        "upload_file stop not an Event",
        "stop",
        lambda h, f, t: h.upload_file(source=f, purpose="fine-tune", stop="x"),
    ),
    (
        "download stop not an Event",
        "stop",
        lambda h, f, t: h.download_file(file_id="file-x", destination=t / "o", stop="x"),
    ),
    (
        "prune older_than timedelta.max",
        "older_than",
        lambda h, f, t: h.prune_files(purpose="fine-tune", older_than=timedelta.max),
    ),
    (
        "wait_for_file poll_interval 1e10",
        "poll_interval",
        lambda h, f, t: h.wait_for_file(file_id=_pending(h), poll_interval=1e10, timeout=1e11),
    ),
    (
        "find_files created_after nan",
        "created_after",
        lambda h, f, t: h.find_files(filename="a.jsonl", purpose="fine-tune", created_after=float("nan")),
    ),
    (
        "find_files created_after str",
        "created_after",
        lambda h, f, t: h.find_files(filename="a.jsonl", purpose="fine-tune", created_after="yesterday"),
    ),
]

# What held (each was tried and is judged before any request, typed, naming the argument).
HELD = [
    ("source closed file", "source", lambda h, f, t: h.upload_file(source=_closed(f), purpose="fine-tune")),
    ("source directory", "source", lambda h, f, t: h.upload_file(source=str(t), purpose="fine-tune")),
    ("source /dev/null", "source", lambda h, f, t: h.upload_file(source="/dev/null", purpose="assistants")),
    (
        "source unknown protocol",
        "source",
        lambda h, f, t: h.upload_file(source="foo://x/y", purpose="assistants"),
    ),
    ("source bool", "source", lambda h, f, t: h.upload_file(source=True, purpose="assistants")),
    (
        "filename CR",
        "filename",
        lambda h, f, t: h.upload_file(source=f, purpose="fine-tune", filename="a\rb"),
    ),
    ("purpose case", "purpose", lambda h, f, t: h.list_files(purpose="FINE-TUNE")),
    ("ids a string", "ids", lambda h, f, t: h.list_files(ids="file-abc")),
    ("ids a CRLF id", "ids[0]", lambda h, f, t: h.list_files(ids=["file-a\r\nX-Injected: 1"])),
    ("file_id list", "file_id", lambda h, f, t: h.get_file(file_id=["a"])),
    ("file_id NBSP", "file_id", lambda h, f, t: h.get_file(file_id="\u00a0")),
    ("file_id lone surrogate", "file_id", lambda h, f, t: h.get_file(file_id="a\udc80")),
    ("wait timeout nan", "timeout", lambda h, f, t: h.wait_for_file(file_id="file-x", timeout=float("nan"))),
    (
        "part_size float",
        "part_size",
        lambda h, f, t: h.upload_multipart(source=f, purpose="fine-tune", part_size=1048576.0),
    ),
    (
        "progress_interval nan",
        "progress_interval",
        lambda h, f, t: h.upload_multipart(source=f, purpose="fine-tune", progress_interval=float("nan")),
    ),
    ("md5 not hex", "md5", lambda h, f, t: h.complete_upload(upload_id="u", part_ids=["p"], md5="z" * 32)),
    (
        "content_url bad port with sig",
        "content_url",
        lambda h, f, t: h.import_file(
            content_url="https://a.b:99999/x?sig=s3cr3t", filename="a.jsonl", purpose="fine-tune"
        ),
    ),
    (
        "content_url userinfo",
        "content_url",
        lambda h, f, t: h.import_file(
            content_url="https://u:pw@a.b/x", filename="a.jsonl", purpose="fine-tune"
        ),
    ),
    (
        "keep_latest nan",
        "keep_latest",
        lambda h, f, t: h.prune_files(purpose="fine-tune", older_than=timedelta(0), keep_latest=float("nan")),
    ),
    (
        "now naive",
        "now",
        lambda h, f, t: h.prune_files(
            purpose="fine-tune", older_than=timedelta(0), now=__import__("datetime").datetime.now()
        ),
    ),
]


def _closed(path):
    handle = open(path, "rb")  # noqa: SIM115
    handle.close()
    return handle


_PENDING: dict[str, str] = {}


def _pending(hook) -> str:
    """A file that stays pending long enough for a wait to sleep (made once, before the counted call)."""
    return _PENDING["id"]


@pytest.fixture
def pending_file(hook, emulator):
    file = hook.upload_file(source=io.BytesIO(b"pending"), purpose="assistants", filename="adv-pending.txt")
    emulator.store.force_statuses(file["id"], ["pending"] * 1000)
    _PENDING["id"] = file["id"]
    return file


def _judge(hook, emulator, chat_file, tmp_path, argument, call):
    before = requests_served(emulator)
    uploads = {u["id"] for u in emulator.store.list_uploads()}
    try:
        call(hook, str(chat_file), tmp_path)
    except AzureOpenAIInvalidArgumentError as exc:
        assert argument is None or exc.argument == argument, f"names {exc.argument!r}, not {argument!r}"
    except AzureOpenAIError as exc:
        assert argument is None, f"typed but not an argument error: {type(exc).__name__}: {exc}"
    except BaseException as exc:
        pytest.fail(f"raw {type(exc).__module__}.{type(exc).__name__}: {str(exc)[:200]}")
    else:
        pytest.fail("accepted")
    finally:
        left = [
            u for u in emulator.store.list_uploads() if u["id"] not in uploads and u["status"] == "pending"
        ]
    assert requests_served(emulator) == before, "a request was sent before the argument was judged"
    assert not left, f"an upload was left pending: {left}"


@pytest.mark.parametrize(("argument", "call"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(hook, emulator, chat_file, tmp_path, pending_file, argument, call):
    _judge(hook, emulator, chat_file, tmp_path, argument, call)


@pytest.mark.parametrize(("argument", "call"), [c[1:] for c in HELD], ids=[c[0] for c in HELD])
def test_held_bad_input(hook, emulator, chat_file, tmp_path, argument, call):
    _judge(hook, emulator, chat_file, tmp_path, argument, call)


def test_a_text_mode_source_never_uploads_text(hook, emulator):
    """FINDING (detail of the StringIO case): upload_file *accepts* an io.StringIO and stores its characters
    encoded by http.client as Latin-1; a non-Latin-1 character breaks the request mid-body instead."""
    with pytest.raises(AzureOpenAIInvalidArgumentError):
        hook.upload_file(
            source=io.StringIO('{"text": "caf\u00e9 \u20ac"}\n'), purpose="assistants", filename="t.jsonl"
        )


# ------------------------------------------------------------------------------------------ object storage
@pytest.mark.parametrize("scheme", ["s3", "gs", "memory"])
def test_an_object_storage_path_of_an_unregistered_scheme_is_a_typed_error(hook, emulator, tmp_path, scheme):
    """FINDING: ObjectStoragePath("s3://...") where Airflow has no filesystem for the scheme (the provider is
    not installed, or `memory` was never attached): `hasattr(path, "fs")` evaluates the property, which
    raises ValueError("No filesystem registered for scheme s3") -- hasattr only swallows AttributeError."""
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    before = requests_served(emulator)
    path = ObjectStoragePath(f"{scheme}://adv-unregistered-{scheme}/x.jsonl")
    for call in (
        lambda: hook.upload_file(source=path, purpose="assistants"),
        lambda: hook.download_file(file_id="file-x", destination=path),
    ):
        with pytest.raises(AzureOpenAIInvalidArgumentError):
            call()
    assert requests_served(emulator) == before


# ------------------------------------------------------------------------------------------ operators
def _run_operator(operator, emulator):
    before = requests_served(emulator)
    files = len(emulator.store.list_files())
    try:
        operator.execute({})
    except AzureOpenAIInvalidArgumentError:
        pass
    except BaseException as exc:
        pytest.fail(f"{type(exc).__name__}: {exc} after {requests_served(emulator) - before} request(s)")
    assert len(emulator.store.list_files()) == files, "a file was created before the argument was judged"


def test_an_operator_with_a_huge_poll_interval_is_refused_when_built(aoai_conn, emulator, chat_file):
    """FINDING: poll_interval / wait_timeout have no upper bound. poll_interval=1e10 (or 1e300) passes the
    constructor; the operator uploads the file, then `stop.wait(1e10)` raises a raw OverflowError
    ("timestamp out of range for platform time_t"): a request (and a file) before the argument fails."""
    from airflow_provider_aoai.operators import AzureOpenAIUploadFileOperator

    emulator.limits.processing_seconds = 30
    try:
        with pytest.raises(AzureOpenAIInvalidArgumentError):
            operator = AzureOpenAIUploadFileOperator(
                task_id="adv_huge_poll",
                source=str(chat_file),
                purpose="fine-tune",
                wait_for_processing=True,
                deferrable=False,
                poll_interval=1e10,
                wait_timeout=1e11,
            )
            _run_operator(operator, emulator)
    finally:
        emulator.limits.processing_seconds = 0.2


@pytest.mark.parametrize(
    ("build", "argument"),
    [
        (
            lambda o: o.AzureOpenAIPruneFilesOperator(
                task_id="p", purpose="fine-tune", older_than=timedelta(1), keep_latest=-1
            ),
            "keep_latest",
        ),
        (
            lambda o: o.AzureOpenAIPruneFilesOperator(task_id="p", purpose="fine-tune", older_than="30d"),
            "older_than",
        ),
        (
            lambda o: o.AzureOpenAIPruneFilesOperator(
                task_id="p", purpose="fine-tune", older_than=timedelta(1), dry_run="yes"
            ),
            "dry_run",
        ),
        (
            lambda o: o.AzureOpenAIDeleteFileOperator(task_id="d", file_id="f", fail_if_missing="no"),
            "fail_if_missing",
        ),
        (
            lambda o: o.AzureOpenAIMultipartUploadOperator(
                task_id="m", source="x", purpose="fine-tune", mime_type=5
            ),
            "mime_type",
        ),
    ],
    ids=[
        "prune keep_latest=-1",
        "prune older_than str",
        "prune dry_run str",
        "delete fail_if_missing str",
        "multipart mime_type int",
    ],
)
def test_operators_judge_non_templated_arguments_when_the_dag_is_parsed(build, argument):
    """DOC MISMATCH: README: "Operators check their non-templated arguments when the DAG is parsed". The
    delete and prune operators check theirs only in execute()."""
    from airflow_provider_aoai import operators

    with pytest.raises(AzureOpenAIInvalidArgumentError) as caught:
        build(operators)
    assert caught.value.argument == argument


# ------------------------------------------------------------------------------------------ connections
def _hook(conn_id: str):
    from airflow_provider_aoai.hooks import AzureOpenAIHook

    return AzureOpenAIHook(aoai_conn_id=conn_id)


def test_a_missing_connection_is_a_typed_error(emulator):
    """LOW: a conn id that is not defined raises Airflow's AirflowNotFoundException, not one of ours."""
    with pytest.raises(AzureOpenAIError):
        _hook("adv_not_defined_anywhere").get_file(file_id="file-x")


@pytest.mark.parametrize(
    ("extra", "login", "field"),
    [
        (
            {
                "auth_type": "workload_identity",
                "tenant_id": "t",
                "client_id": "c",
                "federated_credential_file": 987,
            },
            None,
            "federated_credential_file",
        ),
        (
            {
                "auth_type": "workload_identity",
                "tenant_id": "t",
                "client_id": "c",
                "federated_credential_file": ["/x"],
            },
            None,
            "federated_credential_file",
        ),
        ({"auth_type": "managed_identity"}, "a client id with spaces", "client_id"),
    ],
    ids=["token file int (an fd number)", "token file list", "client id from login unchecked"],
)
def test_every_connection_field_is_checked(emulator, monkeypatch, extra, login, field):
    """FINDING: federated_credential_file is never type-checked (an int makes azure-identity read file
    descriptor 987 -- any open fd of the worker: it reads it, sends its content as the client assertion and closes it), and a client id taken from the login
    field skips the checks the client_id extra gets."""
    fields = {"host": emulator.url, "extra": {**extra, "max_retries": 0}}
    if login is not None:
        fields["login"] = login
    set_connection(monkeypatch, "adv_field", **fields)
    before = requests_served(emulator)
    with pytest.raises(AzureOpenAIError) as caught:
        _hook("adv_field").get_file(file_id="file-x")
    assert field in str(caught.value) and "adv_field" in str(caught.value), str(caught.value)
    assert requests_served(emulator) == before
