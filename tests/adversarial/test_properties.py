"""Property-based attacks beyond tests/test_properties.py: every surface (data plane, v1, Foundry), sources
and destinations of any shape, filenames that must round-trip, and every connection extra -- including
federated_credential_file and scope, with auth types that fetch tokens.

Properties: only the project's typed exceptions; no request before an argument is judged, and any request
addresses only the named resource; nothing but the named file is created; no canary in any text.
"""

from __future__ import annotations

import io
import json
import os
from urllib.parse import quote

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_provider_aoai.exceptions import AzureOpenAIError, AzureOpenAIInvalidArgumentError
from airflow_provider_aoai.hooks import AzureOpenAIHook
from tests.adversarial.helpers import requests_served
from tests.conftest import API_KEY
from tests.misbehaving import Answer, MisbehavingService

CANARY = "ADVCANARYq8Zr"
SETTINGS = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

weird = st.one_of(
    st.text(max_size=30),
    st.text(alphabet="./%#?&=\\~ \t\u00a0\u200b\u202e\ufeffa", max_size=8),
    st.sampled_from(
        [
            "",
            ".",
            "..",
            "./",
            "%2e",
            "%2e%2e",
            "..%2f",
            " .",
            "a\u2028b",
            "\u0085",
            "a\ufffeb",
            "~",
            "~root",
            "-",
        ]
    ),
)


def _texts(exc: BaseException) -> str:
    return f"{exc}{exc!r}{exc.args!r}"


def _connect(service, emulator, surface: str) -> tuple[AzureOpenAIHook, str]:
    """A connection to ``service`` (raw request lines recorded) on one surface; Foundry's managed identity
    tokens come from the emulator."""
    if surface == "foundry":
        os.environ.update(emulator.managed_identity_env())
        document = {
            "conn_type": "aoai",
            "host": f"{service.url}/api/projects/adv",
            "extra": {"auth_type": "managed_identity", "max_retries": 0},
        }
        prefix = "/api/projects/adv"
    else:
        extra = {"max_retries": 0, **({"api_version": "v1"} if surface == "v1" else {})}
        document = {"conn_type": "aoai", "host": service.url, "password": API_KEY, "extra": extra}
        prefix = "/openai/v1" if surface == "v1" else "/openai"
    os.environ[f"AIRFLOW_CONN_ADV_{surface.upper()}"] = json.dumps(document)
    return AzureOpenAIHook(aoai_conn_id=f"adv_{surface}"), prefix


@pytest.fixture(scope="module")
def service():
    with MisbehavingService() as running:
        yield running


@SETTINGS
@given(identifier=weird, surface=st.sampled_from(["data_plane", "v1", "foundry"]))
def test_an_id_reaches_only_its_resource_on_every_surface(service, emulator, identifier, surface, tmp_path):
    service.answer = Answer(404, b'{"error": {"code": "notFound", "message": "no such thing"}}')
    hook, prefix = _connect(service, emulator, surface)
    segment = quote(identifier, safe="")
    calls = {
        f"{prefix}/files/{segment}": lambda: hook.get_file(file_id=identifier),
        f"{prefix}/files/{segment}/content": lambda: hook.download_file(
            file_id=identifier, destination=tmp_path / "out"
        ),
    }
    if surface != "foundry":
        calls[f"{prefix}/uploads/{segment}/parts"] = lambda: hook.add_upload_part(
            upload_id=identifier, data=b"x"
        )
        calls[f"{prefix}/uploads/{segment}/complete"] = lambda: hook.complete_upload(
            upload_id=identifier, part_ids=["p"]
        )
    for expected, call in calls.items():
        before = len(service.seen)
        try:
            call()
        except AzureOpenAIError as exc:
            assert CANARY not in _texts(exc)
        for seen in service.seen[before:]:
            assert seen.raw_path.split("?", 1)[0] == expected, (identifier, seen.raw_path)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "file_id",
    ["sv=2022-11-02&sr=b&sig=ADVLOGSIG", "x?sig=ADVLOGSIG", "x%3Fsig%3DADVLOGSIG", "x%253Fsig%253DADVLOGSIG"],
)
def test_the_emulator_request_log_keeps_ids_but_never_a_query_value(emulator, file_id):
    """Was a finding (cosmetic): an id that reads as a query pair ("&0=") was logged redacted. Decided the
    other way after a later review: a SAS token used as an id (bare, or percent-encoded once or twice) kept
    its signature in the log. The log applies the one redaction rule to every segment; an ordinary id is
    logged as sent."""
    before = len(emulator.faults.requests)
    for attempt in ("file-a.b_c~d-0", file_id):  # sent as they are: the hook refuses such ids before sending
        url = f"{emulator.url}/openai/files/{quote(attempt, safe='~')}?api-version=2024-10-21"
        assert requests.get(url, headers={"api-key": API_KEY}, timeout=10).status_code == 404
    plain, secret = emulator.faults.requests[before:]
    assert plain.path == "/openai/files/file-a.b_c~d-0", plain.path
    log = requests.get(f"{emulator.url}/_emulator/faults", headers={"api-key": API_KEY}, timeout=10).text
    assert "ADVLOGSIG" not in secret.path + repr(secret.params) + log, secret


@SETTINGS
@given(filename=weird)
def test_a_filename_is_refused_before_any_request_or_stored_exactly(hook, emulator, filename):
    before = requests_served(emulator)
    files = {f["id"] for f in emulator.store.list_files()}
    try:
        file = hook.upload_file(source=io.BytesIO(b"adv"), purpose="assistants", filename=filename)
    except AzureOpenAIInvalidArgumentError as exc:
        assert exc.argument == "filename"
        assert requests_served(emulator) == before
        return
    assert file["filename"] == filename
    stored = [f for f in emulator.store.list_files() if f["id"] not in files]
    assert [f["filename"] for f in stored] == [filename]


sources = st.one_of(
    weird,
    st.builds(lambda s: f"file://{s}", weird),
    st.builds(lambda s: f"memory://{s}", weird),
    st.builds(lambda s: f"https://u:{CANARY}@h.invalid/{s}?sig={CANARY}", weird),
    st.builds(lambda s: f"zip://{s}::memory://x.zip", weird),
    st.builds(lambda s: f"~{s}/x", weird),
    st.builds(lambda n: "a" * n, st.integers(200, 5000)),
    st.sampled_from([None, 0, 1.5, b"bytes", bytearray(b"x"), [], {}]),
    st.builds(lambda: io.StringIO("{}\n")),
    st.builds(lambda: io.BytesIO(b"")),
)


@SETTINGS
@given(source=sources, method=st.sampled_from(["upload_file", "upload_multipart"]))
def test_a_source_is_judged_before_any_request(hook, emulator, source, method):
    before = requests_served(emulator)
    try:
        getattr(hook, method)(source=source, purpose="assistants")
    except AzureOpenAIInvalidArgumentError as exc:
        assert exc.argument in ("source", "source (its file name)")
        assert CANARY not in _texts(exc)
        assert requests_served(emulator) == before
    except AzureOpenAIError as exc:
        pytest.fail(f"typed, but not an argument error: {type(exc).__name__}: {exc}")
    else:
        pytest.fail("accepted")


@SETTINGS
@given(destination=st.one_of(sources, st.builds(lambda s: f"/tmp/adv-prop/{s}", weird)))
def test_a_destination_is_judged_before_any_request(hook, emulator, destination):
    before = requests_served(emulator)
    try:
        hook.download_file(file_id="file-adv-missing", destination=destination)
    except AzureOpenAIInvalidArgumentError as exc:
        assert exc.argument == "destination" and requests_served(emulator) == before
    except AzureOpenAIError:
        pass  # a valid destination: the 404 of the missing file


extra_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10, 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    weird,
    st.just(CANARY),
    st.lists(st.text(max_size=3), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@SETTINGS
@given(
    auth_type=st.sampled_from(
        ["api_key", "client_secret", "managed_identity", "workload_identity", "default", None]
    ),
    extra=st.dictionaries(
        st.sampled_from(
            [
                "timeout",
                "max_retries",
                "retry_backoff",
                "tenant_id",
                "client_id",
                "authority_host",
                "scope",
                "federated_credential_file",
                "token_file_path",
                "token_scope",
                "api_version",
            ]
        ),
        extra_values,
        max_size=4,
    ),
    login=st.one_of(st.none(), weird),
)
def test_every_extra_fails_typed_and_test_connection_never_raises(service, auth_type, extra, login):
    service.answer = Answer(200, json.dumps({"object": "list", "data": []}).encode())
    os.environ.pop("IDENTITY_ENDPOINT", None)
    os.environ.pop("IDENTITY_HEADER", None)
    document = {
        "conn_type": "aoai",
        "host": service.url,
        "password": CANARY,
        "login": login,
        "extra": {**extra, **({"auth_type": auth_type} if auth_type else {})},
    }
    document["extra"].setdefault("max_retries", 0)
    os.environ["AIRFLOW_CONN_ADV_EXTRAS"] = json.dumps(document)
    hook = AzureOpenAIHook(aoai_conn_id="adv_extras")
    try:
        hook.list_files()
    except AzureOpenAIError as exc:
        assert CANARY not in _texts(exc)
    _ok, message = hook.test_connection()  # must not raise
    assert CANARY not in message
