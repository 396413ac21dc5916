"""Property-based: whatever ids, filenames, URLs, endpoints and extras the public API gets, it

* raises only this project's typed exceptions (or succeeds),
* sends a request, if any, only to the path of the resource it was asked about,
* never lets a canary secret into any text it builds.

The service is ``MisbehavingService``: a real HTTP server that records the raw request line.
"""

from __future__ import annotations

import json
import os
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_provider_aoai.exceptions import AzureOpenAIError
from airflow_provider_aoai.hooks import AzureOpenAIHook
from tests.misbehaving import Answer, MisbehavingService

CANARY = "CANARYzq7Xw9"
KEY = "property-test-api-key-000"
SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

tricky_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        ["", " ", ".", "..", "/", "a/b", "%2F", "%2e%2e", "#", "?x=1", "a\r\nb", "\x00", "file-1#x"]
    ),
    st.builds(
        lambda a, b: a + b,
        st.sampled_from(["file-1", "up-1", ""]),
        st.text(alphabet="/?#%.&=\r\n\t ", max_size=6),
    ),
)


@pytest.fixture(scope="module")
def service():
    with MisbehavingService() as running:
        yield running


def _hook(url: str, conn_id: str = "aoai_property", **fields) -> AzureOpenAIHook:
    document = {
        "conn_type": "aoai",
        "host": url,
        "password": KEY,
        "extra": {"max_retries": 0, "timeout": 1},
        **fields,
    }
    os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(document)
    return AzureOpenAIHook(aoai_conn_id=conn_id)


def _texts(exc: BaseException) -> str:
    return f"{exc}{exc!r}{exc.args!r}{getattr(exc, 'message', '')}{getattr(exc, 'code', '')}"


def _call(call):
    try:
        return call(), None
    except AzureOpenAIError as exc:
        return None, exc


@SETTINGS
@given(identifier=tricky_text)
def test_an_id_addresses_only_its_resource(service, identifier):
    service.answer = Answer(404, b'{"error": {"code": "notFound", "message": "no such thing"}}')
    hook = _hook(service.url)
    expected = {
        "get": f"/openai/files/{quote(identifier, safe='')}",
        "delete": f"/openai/files/{quote(identifier, safe='')}",
        "cancel": f"/openai/uploads/{quote(identifier, safe='')}/cancel",
        "complete": f"/openai/uploads/{quote(identifier, safe='')}/complete",
    }
    calls = {
        "get": lambda: hook.get_file(file_id=identifier),
        "delete": lambda: hook.delete_file(file_id=identifier),
        "cancel": lambda: hook.cancel_upload(upload_id=identifier),
        "complete": lambda: hook.complete_upload(upload_id=identifier, part_ids=["p1"]),
    }
    for name, call in calls.items():
        before = len(service.seen)
        result, error = _call(call)
        assert result is None and error is not None  # never a success for a 404
        sent = service.seen[before:]
        assert len(sent) <= 1
        if sent:
            assert sent[0].raw_path.split("?", 1)[0] == expected[name]


@SETTINGS
@given(filename=tricky_text, url_tail=tricky_text)
def test_imports_send_only_checked_values_and_echo_no_secret(service, filename, url_tail):
    service.answer = Answer(201, json.dumps({"object": "file", "id": "file-1", "status": "pending"}).encode())
    hook = _hook(service.url)
    url = f"https://user:{CANARY}@acct.blob.core.windows.net/c/{url_tail}?sv=1&sig={CANARY}"
    before = len(service.seen)
    result, error = _call(lambda: hook.import_file(content_url=url, filename=filename, purpose="fine-tune"))
    if error is not None:
        assert CANARY not in _texts(error)
    for seen in service.seen[before:]:
        assert seen.raw_path.split("?", 1)[0] == "/openai/files/import"
    assert result is None or result["id"] == "file-1"


@SETTINGS
@given(
    host=st.one_of(
        tricky_text,
        st.builds(
            lambda scheme, user, tail: f"{scheme}://{user}{CANARY}@{tail}",
            st.sampled_from(["http", "https", "ftp", ""]),
            st.sampled_from(["", ":", "u:"]),
            st.sampled_from(["127.0.0.1:1", "no-such-host.invalid", "h:99999", "[::1", "a b"]),
        ),
        st.builds(lambda tail: f"https://no-such-host.invalid/{tail}?sig={CANARY}", tricky_text),
    )
)
def test_endpoints_fail_typed_and_never_echo_a_secret(host):
    hook = _hook(host, conn_id="aoai_property_endpoint")
    _, error = _call(lambda: hook.get_file(file_id="file-1"))
    ok, message = hook.test_connection()
    assert not ok and CANARY not in message
    if error is not None:
        assert CANARY not in _texts(error)


extra_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10, 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    tricky_text,
    st.just(CANARY),
    st.lists(st.integers(), max_size=2),
)


@SETTINGS
@given(
    extra=st.dictionaries(
        st.sampled_from(
            [
                "timeout",
                "max_retries",
                "retry_backoff",
                "auth_type",
                "api_version",
                "tenant_id",
                "client_id",
                "authority_host",
                "token_scope",
                "client_secret",
            ]
        ),
        extra_values,
        max_size=5,
    )
)
def test_extras_fail_typed_and_never_echo_a_secret(service, extra):
    service.answer = Answer(200, json.dumps({"object": "list", "data": []}).encode())
    document = {"conn_type": "aoai", "host": service.url, "password": CANARY, "extra": extra}
    os.environ["AIRFLOW_CONN_AOAI_PROPERTY_EXTRAS"] = json.dumps(document)
    hook = AzureOpenAIHook(aoai_conn_id="aoai_property_extras")
    before = len(service.seen)
    _, error = _call(hook.list_files)
    _, message = hook.test_connection()
    if error is not None:
        assert CANARY not in _texts(error)
    assert CANARY not in message
    for seen in service.seen[before:]:
        assert seen.raw_path.split("?", 1)[0] == "/openai/files"
