"""Throttling in the emulator, as the live service does it: per-resource token buckets for creates, parts and
reads, the service's 429 (``Retry-After``, ``retry-after-ms``, its body), the counts and the request log, the
command line's flags; and the client under throttling, through the real hook."""

from __future__ import annotations

import math
import pickle
import re
import threading
import time
from typing import Any

import pytest
import requests

from airflow_provider_aoai.emulator import Emulator, Throttle
from airflow_provider_aoai.emulator.__main__ import parse_args
from airflow_provider_aoai.emulator.faults import OPERATIONS
from airflow_provider_aoai.emulator.throttle import (
    FILE_UPLOAD_REQUESTS_PER_SECOND,
    OPERATION_IDS,
    Throttler,
    class_of,
)
from airflow_provider_aoai.exceptions import AzureOpenAIRateLimitError
from airflow_provider_aoai.hooks import AzureOpenAIHook
from airflow_provider_aoai.http import client as client_module
from tests.conftest import API_KEY, CHAT_LINE, jsonl, set_connection
from tests.emulator_api import KEY, V, add_part, ai_token, complete, emulator_process, start_upload

PROJECT_V = {"api-version": "2025-11-15-preview"}
# The uploads these tests start: an assistants text file.
TEXT_UPLOAD = {"purpose": "assistants", "filename": "u.txt", "mime_type": "text/plain"}
TINY = 0.001  # a token every 1000 s: the bucket's one token, then nothing for the rest of the test
MESSAGE = re.compile(
    r"Requests to the (\w+) Operation under Azure OpenAI API version (\S+) have exceeded call rate limit of "
    r"your current OpenAI S0 pricing tier\. Please retry after (\d+) seconds?\. Please go here: "
    r"https://aka\.ms/oai/quotaincrease if you would like to further increase the default rate limit\."
)
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@pytest.fixture(scope="module")
def emu():
    """An emulator of this module's own: no limits unless a test sets them (reset around each test)."""
    with Emulator(api_key=API_KEY, processing_seconds=0, throttle=Throttle.off()) as emulator:
        yield emulator


@pytest.fixture
def throttled(emu):
    emu.faults.clear()
    emu.throttler.reset()
    yield emu
    emu.faults.clear()
    emu.throttler.reset()


# ------------------------------------------------------------------------------ helpers
def control(emu: Emulator, method: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.request(method, f"{emu.url}/_emulator/{path}", headers=KEY, timeout=10, **kwargs)


def set_rates(emu: Emulator, **rates: float) -> dict[str, Any]:
    answer = control(emu, "POST", "throttle", json=rates)
    assert answer.status_code == 200, answer.text
    return answer.json()


def counts(emu: Emulator) -> dict[str, Any]:
    return control(emu, "GET", "throttle").json()


def files_url(emu: Emulator, surface: str) -> tuple[str, dict[str, str], dict[str, str]]:
    """Where a surface's files are, its query and its auth headers."""
    if surface == "data_plane":
        return f"{emu.url}/openai/files", V, KEY
    if surface == "v1":
        return f"{emu.url}/openai/v1/files", {}, KEY
    if surface == "foundry":
        return f"{emu.project_url('p')}/files", {"api-version": "v1"}, ai_token(emu)
    return f"{emu.project_url('p')}/openai/files", PROJECT_V, ai_token(emu)


def create(
    emu: Emulator, name: str, surface: str = "data_plane", url: str | None = None
) -> requests.Response:
    files, params, headers = files_url(emu, surface)
    return requests.post(
        url or files,
        params=params,
        headers=headers,
        files={"file": (name, b"some bytes")},
        data={"purpose": "assistants"},
        timeout=10,
    )


def list_files(emu: Emulator) -> requests.Response:
    return requests.get(f"{emu.url}/openai/files", params=V, headers=KEY, timeout=10)


def filenames(emu: Emulator) -> list[str]:
    """Every file the emulator holds, by name (read from its store: no request, nothing throttled)."""
    assert emu.store is not None
    return [f["filename"] for f in emu.store.list_files()]


def upload_of(emu: Emulator, upload_id: str) -> dict[str, Any]:
    uploads = control(emu, "GET", "uploads").json()["data"]
    return next(u for u in uploads if u["id"] == upload_id)


def log(emu: Emulator, operation: str) -> list[dict[str, Any]]:
    return [r for r in control(emu, "GET", "faults").json()["requests"] if r["operation"] == operation]


def check_429(answer: requests.Response, surface: str, operation: str) -> int:
    """The service's 429 in the surface's shape; returns its retry-after-ms."""
    assert answer.status_code == 429, answer.text
    milliseconds = int(answer.headers["retry-after-ms"])
    assert milliseconds >= 1
    assert answer.headers["Retry-After"] == str(max(1, math.ceil(milliseconds / 1000)))
    assert UUID.fullmatch(answer.headers["apim-request-id"])
    assert "x-aoai-emulator-throttled" not in answer.headers
    error = answer.json()["error"]
    expected_keys = {
        "data_plane": ["code", "message"],
        "v1": ["code", "message", "param", "type"],
        "foundry": ["code", "message", "param", "type"],
        "foundry_openai": ["message", "type", "param", "code"],
    }[surface]
    assert list(error) == expected_keys
    assert error["code"] == "429"
    match = MESSAGE.fullmatch(error["message"])
    assert match is not None, error["message"]
    assert match.group(1) == OPERATION_IDS[operation]
    assert match.group(3) == answer.headers["Retry-After"]
    return milliseconds


def within_the_bucket(ok: int, sent: int, *, capacity: float, rate: float, elapsed: float) -> None:
    """``ok`` of ``sent`` requests got through in ``elapsed`` seconds: a full bucket's worth at least, and no
    more than the bucket held plus what it earned meanwhile; the rest was throttled."""
    most = math.floor(capacity + rate * elapsed + 1e-9)
    assert math.floor(capacity) <= ok <= most, (ok, sent, elapsed)
    assert sent - ok >= sent - most


# ------------------------------------------------------------------------------ the buckets, on a fake clock
def test_a_bucket_holds_one_seconds_worth_and_refills_continuously():
    now = [100.0]
    throttler = Throttler(Throttle(creates=4, parts=0.5, reads=0), clock=lambda: now[0])
    assert [throttler.admit("files.create") for _ in range(4)] == [None] * 4
    assert throttler.admit("uploads.create") == pytest.approx(0.25)  # one token every 0.25 s
    now[0] += 0.1
    assert throttler.admit("files.import") == pytest.approx(0.15)
    now[0] += 0.15
    assert throttler.admit("uploads.complete") is None
    now[0] += 10  # refills up to one second's worth, never more
    assert [throttler.admit("files.create") for _ in range(5)][-1] == pytest.approx(0.25)
    # Under one a second, the bucket still holds one request.
    assert throttler.admit("uploads.parts") is None
    assert throttler.admit("uploads.parts") == pytest.approx(2.0)
    assert all(throttler.admit("files.get") is None for _ in range(1000))
    assert throttler.snapshot() == {
        "creates": {"rate": 4.0, "allowed": 9, "throttled": 3},
        "parts": {"rate": 0.5, "allowed": 1, "throttled": 1},
        "reads": {"rate": 0.0, "allowed": 1000, "throttled": 0},
    }


def test_a_rate_change_keeps_the_tokens_earned_and_reset_restores_the_configuration():
    now = [0.0]
    throttler = Throttler(Throttle(creates=4, parts=0, reads=0), clock=lambda: now[0])
    for _ in range(4):
        throttler.admit("files.create")
    throttler.set_rates(creates=0.01, parts=2)
    assert throttler.admit("files.create") == pytest.approx(100.0)  # nothing earned, a token per 100 s
    assert [throttler.admit("uploads.parts") for _ in range(3)][:2] == [None, None]  # was unlimited: full
    throttler.reset()
    assert throttler.snapshot()["creates"] == {"rate": 4.0, "allowed": 0, "throttled": 0}
    assert [throttler.admit("files.create") for _ in range(4)] == [None] * 4
    with pytest.raises(ValueError, match="unknown classes"):
        throttler.set_rates(writes=1)
    for bad in (-1, math.inf, math.nan, True, "5", None):
        with pytest.raises(ValueError, match="at least 0"):
            throttler.set_rates(creates=bad)
        with pytest.raises(ValueError, match="parts must be a number"):
            Throttle(parts=bad)  # type: ignore[arg-type]
    assert throttler.snapshot()["creates"]["rate"] == 4.0


def test_each_operation_has_its_class():
    assert {op: class_of(op) for op in OPERATIONS} == {
        "files.create": "creates",
        "files.import": "creates",
        "uploads.create": "creates",
        "uploads.complete": "creates",
        "uploads.parts": "parts",
        "files.list": "reads",
        "files.get": "reads",
        "files.delete": "reads",
        "files.content": "reads",
        "uploads.cancel": "reads",
    }
    assert set(OPERATION_IDS) == set(OPERATIONS)


def test_the_defaults_are_the_documented_figure():
    assert FILE_UPLOAD_REQUESTS_PER_SECOND == 30
    assert Throttle() == Throttle(creates=30, parts=30, reads=0)
    args = parse_args([])
    assert (args.max_creates_per_second, args.max_parts_per_second, args.max_reads_per_second) == (30, 30, 0)
    with pytest.raises(SystemExit) as exited:
        parse_args(["--max-creates-per-second", "-1"])
    assert exited.value.code == 2


# ------------------------------------------------------------------------------ over HTTP
def test_a_burst_is_admitted_then_throttled(throttled):
    emu = throttled
    assert set_rates(emu, creates=2)["creates"]["rate"] == 2.0
    started = time.monotonic()
    statuses = [create(emu, f"burst-{n}.txt").status_code for n in range(6)]
    elapsed = time.monotonic() - started
    assert statuses[:2] == [200, 200]
    ok = statuses.count(200)
    within_the_bucket(ok, 6, capacity=2, rate=2, elapsed=elapsed)
    assert set(statuses) == {200, 429}
    assert counts(emu)["creates"] == {"rate": 2.0, "allowed": ok, "throttled": 6 - ok}


def test_retry_after_says_when_a_token_is_back(throttled):
    emu = throttled
    spending = time.monotonic()
    set_rates(emu, creates=2)  # a token every 0.5 s
    assert [create(emu, f"spend-{n}.txt").status_code for n in range(2)] == [200, 200]
    sent = time.monotonic()
    answer = create(emu, "early.txt")
    answered = time.monotonic()
    milliseconds = check_429(answer, "data_plane", "files.create")
    # The bucket was emptied: a whole token is missing, less what it earned since.
    assert 500 - (answered - spending) * 1000 - 1 <= milliseconds <= 500
    # Not a moment before the time it named, and soon after it.
    deadline = answered + 5
    while True:
        attempt_sent = time.monotonic()
        answer = create(emu, "on-time.txt")
        if answer.status_code != 429:
            break
        assert time.monotonic() < deadline, "no token came back"
        time.sleep(0.01)
    assert answer.status_code == 200
    assert time.monotonic() >= sent + milliseconds / 1000 - 0.002
    assert attempt_sent <= answered + milliseconds / 1000 + 1.0
    assert filenames(emu).count("early.txt") == 0 and filenames(emu).count("on-time.txt") == 1


def test_retry_after_rounds_up_to_whole_seconds(throttled):
    emu = throttled
    set_rates(emu, creates=0.25)  # one token, then one every 4 s
    spent = time.monotonic()
    assert create(emu, "spend.txt").status_code == 200
    milliseconds = check_429(create(emu, "late.txt"), "data_plane", "files.create")
    assert 4000 - (time.monotonic() - spent) * 1000 - 1 <= milliseconds <= 4000
    assert create(emu, "late.txt").headers["Retry-After"] == "4"


def test_an_extreme_rate_names_a_finite_wait(throttled):
    emu = throttled
    set_rates(emu, creates=5e-324, parts=1e308)
    assert create(emu, "extreme.txt").status_code == 200
    answer = create(emu, "too-soon.txt")
    check_429(answer, "data_plane", "files.create")
    assert answer.headers["Retry-After"] == "1000000000"  # a billion seconds: the most a 429 names


@pytest.mark.parametrize("surface", ["data_plane", "v1", "foundry", "foundry_openai"])
def test_a_throttled_create_has_no_effect_on_every_surface(throttled, surface):
    emu = throttled
    set_rates(emu, creates=TINY)
    first, second = f"first-{surface}.txt", f"second-{surface}.txt"
    assert create(emu, first, surface).status_code == 200
    check_429(create(emu, second, surface), surface, "files.create")
    assert filenames(emu).count(first) == 1
    assert second not in filenames(emu)


def test_a_throttled_import_creates_no_file(throttled):
    emu = throttled
    set_rates(emu, creates=TINY)
    assert start_upload(emu, 1, **TEXT_UPLOAD).status_code == 200  # spends the token
    url = emu.put_blob("throttled.jsonl", jsonl([CHAT_LINE]))
    answer = requests.post(
        f"{emu.url}/openai/files/import",
        params=V,
        headers=KEY,
        json={"purpose": "fine-tune", "filename": "imported.jsonl", "content_url": url},
        timeout=10,
    )
    check_429(answer, "data_plane", "files.import")
    assert "imported.jsonl" not in filenames(emu)


@pytest.mark.parametrize("prefix", ["/openai", "/openai/v1"])
def test_a_throttled_upload_create_leaves_no_upload(throttled, prefix):
    emu = throttled
    before = control(emu, "GET", "uploads").json()["data"]
    set_rates(emu, creates=TINY)
    assert create(emu, "spend.txt").status_code == 200
    check_429(
        start_upload(emu, 1, prefix=prefix, **TEXT_UPLOAD),
        "v1" if prefix.endswith("v1") else "data_plane",
        "uploads.create",
    )
    assert control(emu, "GET", "uploads").json()["data"] == before


def test_a_throttled_part_or_complete_changes_nothing(throttled):
    emu = throttled
    upload_id = start_upload(emu, 6, **(TEXT_UPLOAD | {"filename": "parts-and-complete.txt"})).json()["id"]
    first = add_part(emu, upload_id, b"abc").json()["id"]
    set_rates(emu, parts=TINY)
    second = add_part(emu, upload_id, b"def").json()["id"]  # the bucket's one token
    check_429(add_part(emu, upload_id, b"xyz"), "data_plane", "uploads.parts")
    assert upload_of(emu, upload_id)["part_ids"] == [first, second]

    set_rates(emu, creates=TINY)
    assert create(emu, "spend.txt").status_code == 200
    check_429(complete(emu, upload_id, [first, second]), "data_plane", "uploads.complete")
    assert upload_of(emu, upload_id)["status"] == "pending"
    assert "parts-and-complete.txt" not in filenames(emu)

    set_rates(emu, creates=0)
    done = complete(emu, upload_id, [first, second])
    assert done.status_code == 200 and done.json()["status"] == "completed"
    assert filenames(emu).count("parts-and-complete.txt") == 1


def test_each_class_has_its_own_bucket(throttled):
    emu = throttled
    upload_id = start_upload(emu, 100, **TEXT_UPLOAD).json()["id"]
    before = counts(emu)
    set_rates(emu, creates=TINY, parts=TINY, reads=TINY)
    assert create(emu, "one.txt").status_code == 200
    assert create(emu, "two.txt").status_code == 429
    assert list_files(emu).status_code == 200  # reads keep their own token
    assert add_part(emu, upload_id, b"p").status_code == 200  # and so do parts
    assert list_files(emu).status_code == 429
    assert add_part(emu, upload_id, b"q").status_code == 429
    after = counts(emu)
    for name in ("creates", "parts", "reads"):
        assert after[name]["allowed"] - before[name]["allowed"] == 1, name
        assert after[name]["throttled"] - before[name]["throttled"] == 1, name


def test_reads_are_unlimited_by_default_and_the_emulators_own_endpoints_never_throttled():
    with Emulator(api_key=API_KEY) as emu:
        assert counts(emu) == {
            "creates": {"rate": 30.0, "allowed": 0, "throttled": 0},
            "parts": {"rate": 30.0, "allowed": 0, "throttled": 0},
            "reads": {"rate": 0.0, "allowed": 0, "throttled": 0},
        }
        assert {list_files(emu).status_code for _ in range(60)} == {200}
        assert counts(emu)["reads"] == {"rate": 0.0, "allowed": 60, "throttled": 0}

        set_rates(emu, creates=TINY, parts=TINY, reads=TINY)
        before = counts(emu)
        for _ in range(5):
            for path in ("health", "faults", "uploads", "throttle"):
                assert control(emu, "GET", path).status_code == 200
            token = requests.get(
                emu.identity_endpoint,
                params={"api-version": "2019-08-01", "resource": "https://ai.azure.com"},
                headers={"X-IDENTITY-HEADER": emu.identity.header_secret},
                timeout=10,
            )
            assert token.status_code == 200
        assert counts(emu) == before


def test_refused_credentials_and_api_versions_cost_no_token(throttled):
    emu = throttled
    set_rates(emu, creates=TINY)
    wrong_key = requests.post(
        f"{emu.url}/openai/files",
        params=V,
        headers={"api-key": "wrong"},
        files={"file": ("x.txt", b"x")},
        data={"purpose": "assistants"},
        timeout=10,
    )
    assert wrong_key.status_code == 401
    unserved = requests.post(
        f"{emu.url}/openai/files",
        params={"api-version": "2020-01-01"},
        headers=KEY,
        files={"file": ("x.txt", b"x")},
        data={"purpose": "assistants"},
        timeout=10,
    )
    assert unserved.status_code == 404
    assert counts(emu)["creates"] == {"rate": TINY, "allowed": 0, "throttled": 0}
    assert create(emu, "the-token.txt").status_code == 200


def test_the_counts_the_request_log_and_the_reset(throttled):
    emu = throttled
    set_rates(emu, creates=TINY)
    statuses = [create(emu, f"logged-{n}.txt").status_code for n in range(3)]
    assert statuses == [200, 429, 429]
    logged = [(r["status"], r["throttled"], r["fault"]) for r in log(emu, "files.create")]
    assert logged == [(200, False, None), (429, True, None), (429, True, None)]
    assert counts(emu)["creates"] == {"rate": TINY, "allowed": 1, "throttled": 2}

    # A scripted 429 is a fault, not throttling: it never reaches the buckets.
    emu.faults.inject("files.list", status=429, retry_after="7")
    assert list_files(emu).status_code == 429
    assert [(r["throttled"], r["fault"]) for r in log(emu, "files.list")] == [(False, "status 429")]
    assert counts(emu)["reads"]["allowed"] == 0

    # The reset clears the counts and the request log, and restores the configured rates (none here).
    assert control(emu, "DELETE", "faults").status_code == 200
    assert counts(emu)["creates"] == {"rate": 0.0, "allowed": 0, "throttled": 0}
    assert log(emu, "files.create") == []
    assert create(emu, "after-reset.txt").status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        '{"creates": -1}',
        '{"parts": "5"}',
        '{"reads": true}',
        '{"creates": null}',
        '{"creates": 1e400}',
        '{"creates": NaN}',
        '{"writes": 1}',
        "[1]",
        "not json",
    ],
)
def test_a_bad_rate_is_a_400_and_changes_nothing(throttled, body):
    emu = throttled
    set_rates(emu, creates=3)
    answer = control(emu, "POST", "throttle", data=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "invalidPayload"
    assert {name: c["rate"] for name, c in counts(emu).items()} == {
        "creates": 3.0,
        "parts": 0.0,
        "reads": 0.0,
    }


def test_the_throttle_endpoint_needs_the_api_key(throttled):
    emu = throttled
    assert requests.get(f"{emu.url}/_emulator/throttle", timeout=10).status_code == 401
    answer = requests.post(f"{emu.url}/_emulator/throttle", json={"creates": 0.5}, timeout=10)
    assert answer.status_code == 401
    assert counts(emu)["creates"]["rate"] == 0.0


def test_the_command_line_sets_the_rates(tmp_path):
    flags = ("--max-creates-per-second", "5", "--max-parts-per-second", "0", "--max-reads-per-second", "2.5")
    with emulator_process(*flags, data_dir=tmp_path) as (_, url):
        assert url.startswith("http://127.0.0.1:")
        answer = requests.get(f"{url}/_emulator/throttle", headers=KEY, timeout=10)
        assert {name: c["rate"] for name, c in answer.json().items()} == {
            "creates": 5.0,
            "parts": 0.0,
            "reads": 2.5,
        }
        started = time.monotonic()
        statuses = [
            requests.post(
                f"{url}/openai/files",
                params=V,
                headers=KEY,
                files={"file": (f"cli-{n}.txt", b"x")},
                data={"purpose": "assistants"},
                timeout=10,
            ).status_code
            for n in range(12)
        ]
        within_the_bucket(statuses.count(200), 12, capacity=5, rate=5, elapsed=time.monotonic() - started)
        started = time.monotonic()
        reads = [requests.get(f"{url}/openai/files", params=V, headers=KEY, timeout=10) for _ in range(8)]
        ok = [r.status_code for r in reads].count(200)
        within_the_bucket(ok, 8, capacity=2.5, rate=2.5, elapsed=time.monotonic() - started)
        check_429(next(r for r in reads if r.status_code == 429), "data_plane", "files.list")


# ------------------------------------------------------------------------------ the client, through the hook
@pytest.fixture
def spy_backoff(monkeypatch):
    """Each wait the client chose between attempts: (the service's Retry-After in seconds, the wait)."""
    waits: list[tuple[float | None, float]] = []
    original = client_module.backoff_seconds
    lock = threading.Lock()

    def spy(attempt: int, retry_after: float | None, **kwargs: Any) -> float:
        delay = original(attempt, retry_after, **kwargs)
        with lock:
            waits.append((retry_after, delay))
        return delay

    monkeypatch.setattr(client_module, "backoff_seconds", spy)
    return waits


def run_threads(count: int, work) -> list[tuple[Any, float]]:
    """Run ``work(n)`` in ``count`` threads at once; each one's result (or exception) and duration."""
    results: list[tuple[Any, float]] = [(None, 0.0)] * count
    barrier = threading.Barrier(count)

    def run(n: int) -> None:
        barrier.wait()
        started = time.monotonic()
        try:
            outcome: Any = work(n)
        except Exception as exc:  # the test inspects it
            outcome = exc
        results[n] = (outcome, time.monotonic() - started)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "an upload never ended"
    return results


def test_a_burst_of_concurrent_uploads_all_land_once(throttled, monkeypatch, tmp_path, spy_backoff):
    emu = throttled
    set_connection(
        monkeypatch,
        "aoai_throttled",
        host=emu.url,
        password=API_KEY,
        extra={"max_retries": 15, "retry_backoff": 0.01, "max_retry_wait": 60},
    )
    count, rate = 12, 5
    sources = []
    for n in range(count):
        source = tmp_path / f"concurrent-{n}.txt"
        source.write_bytes(f"file {n}\n".encode())
        sources.append(source)
    started = time.monotonic()
    set_rates(emu, creates=rate)
    results = run_threads(
        count,
        lambda n: AzureOpenAIHook(aoai_conn_id="aoai_throttled").upload_file(
            source=sources[n], purpose="assistants"
        ),
    )
    elapsed = time.monotonic() - started

    files = [outcome for outcome, _ in results]
    assert all(isinstance(f, dict) for f in files), files
    assert len({f["id"] for f in files}) == count
    names = filenames(emu)
    assert all(names.count(f"concurrent-{n}.txt") == 1 for n in range(count))
    creates = log(emu, "files.create")
    assert [r["status"] for r in creates].count(200) == count
    throttled_calls = [r for r in creates if r["status"] == 429]
    assert throttled_calls and all(r["throttled"] for r in throttled_calls)
    assert counts(emu)["creates"] == {"rate": 5.0, "allowed": count, "throttled": len(throttled_calls)}
    # The client waited as long as the service asked (retry-after-ms: at most a token's 0.2 s), never less.
    assert len(spy_backoff) == len(throttled_calls)
    assert all(asked is not None and 0 < asked <= 1 / rate + 0.001 for asked, _ in spy_backoff)
    assert all(waited >= asked for asked, waited in spy_backoff if asked is not None)
    assert elapsed >= (count - rate) / rate - 0.05  # the last file could not be created any sooner


def test_a_fleet_under_sustained_throttling_gives_up_within_its_wait_budget(
    throttled, monkeypatch, tmp_path, spy_backoff
):
    emu = throttled
    budget = 2.0
    set_connection(
        monkeypatch,
        "aoai_fleet",
        host=emu.url,
        password=API_KEY,
        extra={"max_retries": 20, "retry_backoff": 0.01, "max_retry_wait": budget},
    )
    count = 8
    for n in range(count):
        (tmp_path / f"fleet-{n}.txt").write_bytes(b"x\n")
    started = time.monotonic()
    set_rates(emu, creates=1)  # one a second for eight tasks, each willing to wait 2 s in all
    results = run_threads(
        count,
        lambda n: AzureOpenAIHook(aoai_conn_id="aoai_fleet").upload_file(
            source=tmp_path / f"fleet-{n}.txt", purpose="assistants"
        ),
    )
    elapsed = time.monotonic() - started

    succeeded = [outcome for outcome, _ in results if isinstance(outcome, dict)]
    failed = [outcome for outcome, _ in results if not isinstance(outcome, dict)]
    assert len(succeeded) <= 1 + math.floor(elapsed)  # the bucket's one token, then one a second
    assert len(succeeded) + len(failed) == count and failed
    for error in failed:
        assert isinstance(error, AzureOpenAIRateLimitError), repr(error)
        assert error.status == 429 and error.code == "429"
        assert error.attempts >= 2  # each 429 asked for at most 1 s: the client waited and tried again
        assert 0 < error.waited <= budget
        assert f"gave up after {error.attempts} attempts, {error.waited:.1f}s of waiting between them" in str(
            error
        )
    assert all(duration <= budget + 3.0 for _, duration in results), [d for _, d in results]
    # Only the files that were answered exist, each once; a task that gave up left nothing behind.
    names = filenames(emu)
    assert sorted(f["filename"] for f in succeeded) == sorted(n for n in names if n.startswith("fleet-"))
    assert [r["status"] for r in log(emu, "files.create")].count(429) >= sum(e.attempts for e in failed)


def test_the_client_gives_up_at_once_when_the_service_asks_for_more_than_its_budget(
    throttled, monkeypatch, tmp_path
):
    emu = throttled
    set_connection(
        monkeypatch,
        "aoai_patient",
        host=emu.url,
        password=API_KEY,
        extra={"max_retries": 5, "retry_backoff": 0.01, "max_retry_wait": 2.0},
    )
    source = tmp_path / "patient.txt"
    source.write_bytes(b"x\n")
    set_rates(emu, creates=0.01)  # the bucket's one token, then one every 100 s
    assert create(emu, "spend.txt").status_code == 200
    started = time.monotonic()
    with pytest.raises(AzureOpenAIRateLimitError) as caught:
        AzureOpenAIHook(aoai_conn_id="aoai_patient").upload_file(source=source, purpose="assistants")
    assert time.monotonic() - started < 2.0
    assert (caught.value.attempts, caught.value.waited) == (1, 0.0)
    assert "Please retry after 100 seconds" in str(caught.value)
    # It says why one attempt was all: the retry was due past the connection's budget.
    assert "gave up after 1 attempt, 0.0s of waiting" in str(caught.value)
    assert "past the connection's max_retry_wait of 2s" in str(caught.value)
    assert caught.value.gave_up and pickle.loads(pickle.dumps(caught.value)).gave_up == caught.value.gave_up
    assert "patient.txt" not in filenames(emu)
    assert [r["status"] for r in log(emu, "files.create")] == [200, 429]
