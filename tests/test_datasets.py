"""Datasets: every problem code with a file that triggers it, the data that must pass, sources and
destinations of each kind, the md5 of a scan, batch splitting and the emulated service's verdicts."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import fsspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_provider_aoai.dataset_rules import BATCH_URLS, READ_CHUNK, service_verdict
from airflow_provider_aoai.datasets import DatasetProblem, scan_dataset, split_batch_file, validate_dataset
from airflow_provider_aoai.exceptions import AzureOpenAIDatasetError, AzureOpenAIInvalidArgumentError
from airflow_provider_aoai.sources import open_source
from tests.conftest import BATCH_LINE, CHAT_LINE, jsonl

BOM = b"\xef\xbb\xbf"


def request(custom_id: str, model: str = "gpt-4o-mini", url: str = "/chat/completions", **extra) -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": f"Say {custom_id}"}], **extra}
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def batch(count: int, **kwargs) -> list[dict]:
    return [request(f"r{n}", **kwargs) for n in range(1, count + 1)]


def chat(*messages: dict, **top) -> dict:
    return {"messages": list(messages), **top}


def user(text: str = "Hi") -> dict:
    return {"role": "user", "content": text}


def assistant(text: str = "Hello.", **extra) -> dict:
    return {"role": "assistant", "content": text, **extra}


def write(tmp_path: Path, data: bytes, name: str = "data.jsonl") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def problems_of(tmp_path: Path, data: bytes, purpose: str, **limits) -> list[tuple[str, int | None]]:
    return [(p.code, p.line) for p in validate_dataset(write(tmp_path, data), purpose, **limits)]


def fine_tune_file(*examples: dict, padding: int = 10) -> bytes:
    """The examples, then plain chats up to ``padding`` lines (so that too_few_examples stays out of it)."""
    return jsonl([*examples, *[CHAT_LINE] * max(padding - len(examples), 0)])


# --- batch ----------------------------------------------------------------------------------------------


def test_a_valid_batch_file_has_no_problem(tmp_path):
    assert validate_dataset(write(tmp_path, jsonl(batch(50))), "batch") == []
    assert validate_dataset(write(tmp_path, jsonl([BATCH_LINE])), "batch") == []


@pytest.mark.parametrize("url", BATCH_URLS)
def test_every_documented_endpoint_is_accepted(tmp_path, url):
    assert validate_dataset(write(tmp_path, jsonl(batch(3, url=url))), "batch") == []


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"{not json", "invalid_json_line"),
        (b'{"custom_id": "x", "method": "POST"', "invalid_json_line"),
        (b"", "invalid_json_line"),  # a blank line in the middle
        (b"   \t", "invalid_json_line"),
        (b'{"custom_id": "x", "body": NaN}', "invalid_json_line"),  # NaN is Python's, not JSON's
        (b'{"a": "\xff"}', "invalid_json_line"),  # not UTF-8
        (b"[1, 2]", "invalid_request"),
        (b'"a string"', "invalid_request"),
        (json.dumps({**request("x"), "custom_id": ""}).encode(), "invalid_request"),
        (json.dumps({**request("x"), "custom_id": 7}).encode(), "invalid_request"),
        (json.dumps({k: v for k, v in request("x").items() if k != "custom_id"}).encode(), "invalid_request"),
        (json.dumps({**request("x"), "method": None}).encode(), "invalid_request"),
        (json.dumps({**request("x"), "custom_id": ["x"]}).encode(), "invalid_request"),
        (json.dumps({**request("x"), "url": {"/chat/completions": 1}}).encode(), "invalid_request"),
        (json.dumps({**request("x"), "body": {"model": ["gpt-4o-mini"]}}).encode(), "invalid_request"),
        (json.dumps({**request("x"), "url": ["/chat/completions"]}).encode(), "invalid_request"),
        (json.dumps({**request("x"), "body": "hello"}).encode(), "invalid_request"),
        (json.dumps({**request("x"), "body": {"messages": []}}).encode(), "invalid_request"),
        (json.dumps({**request("x"), "body": {"model": ""}}).encode(), "invalid_request"),
        (json.dumps({**request("x"), "method": "GET"}).encode(), "invalid_method"),
        (json.dumps({**request("x"), "method": "post"}).encode(), "invalid_method"),
        (json.dumps(request("x", url="/embeddings")).encode(), "invalid_url"),
        (json.dumps(request("x", url="/v1/embeddings")).encode(), "invalid_url"),
        (json.dumps(request("x", url="/completions")).encode(), "invalid_url"),
    ],
)
def test_each_batch_line_problem_is_found_on_its_line(tmp_path, line, code):
    data = jsonl(batch(2)) + line + b"\n" + jsonl([request("r9")])
    assert problems_of(tmp_path, data, "batch") == [(code, 3)]


def test_a_line_with_several_problems_lists_each(tmp_path):
    bad = {"custom_id": "", "method": "GET", "url": "/v1/embeddings", "body": {}}
    found = problems_of(tmp_path, jsonl([*batch(1), bad]), "batch")
    assert found == [
        ("invalid_request", 2),
        ("invalid_method", 2),
        ("invalid_url", 2),
        ("invalid_request", 2),
    ]


def test_duplicate_custom_ids_name_both_lines(tmp_path):
    data = jsonl([request("a"), request("b"), request("a"), request("c"), request("b")])
    found = validate_dataset(write(tmp_path, data), "batch")
    assert [(p.code, p.line) for p in found] == [("duplicate_custom_id", 3), ("duplicate_custom_id", 5)]
    assert found[0].message == "Line 3: custom_id 'a' is also on line 1; make ids unique"
    assert "also on line 2" in found[1].message


def test_two_deployments_are_a_model_mismatch_on_each_other_line(tmp_path):
    data = jsonl(
        [
            request("a", model="gpt-4o-mini"),
            request("b", model="gpt-4o"),
            request("c"),
            request("d", model="x"),
        ]
    )
    found = validate_dataset(write(tmp_path, data), "batch")
    assert [(p.code, p.line) for p in found] == [("model_mismatch", 2), ("model_mismatch", 4)]
    assert found[0].message == (
        "Line 2: body.model is 'gpt-4o' but line 1 has 'gpt-4o-mini': every line of a batch file targets one "
        "deployment; split it with split_batch_file"
    )


def test_the_reference_model_is_that_of_the_first_valid_line(tmp_path):
    data = jsonl(
        [{**request("a"), "body": {"model": ""}}, request("b", model="m2"), request("c", model="m3")]
    )
    found = problems_of(tmp_path, data, "batch")
    assert found == [("invalid_request", 1), ("model_mismatch", 3)]


def test_two_urls_are_a_url_mismatch(tmp_path):
    data = jsonl([request("a"), request("b", url="/v1/chat/completions"), request("c")])
    found = validate_dataset(write(tmp_path, data), "batch")
    assert [(p.code, p.line) for p in found] == [("url_mismatch", 2)]
    assert "line 1 has '/chat/completions'" in found[0].message


def test_an_endpoint_outside_the_documented_ones_is_not_a_url_mismatch_too(tmp_path):
    data = jsonl([request("a", url="/v1/embeddings"), request("b"), request("c", url="/embeddings")])
    assert problems_of(tmp_path, data, "batch") == [("invalid_url", 1), ("invalid_url", 3)]


def test_too_many_tasks_with_a_smaller_limit(tmp_path):
    data = jsonl(batch(4))
    assert problems_of(tmp_path, data, "batch", max_requests=3) == [("too_many_tasks", None)]
    assert problems_of(tmp_path, data, "batch", max_requests=4) == []


def test_100_001_requests_are_too_many_tasks_by_default(tmp_path):
    line = '{"custom_id":"%d","method":"POST","url":"/chat/completions","body":{"model":"m"}}\n'
    path = tmp_path / "big.jsonl"
    path.write_text("".join(line % n for n in range(100_001)))
    found = validate_dataset(path, "batch")
    assert [(p.code, p.line) for p in found] == [("too_many_tasks", None)]
    assert "100,001 requests" in found[0].message
    path.write_text("".join(line % n for n in range(100_000)))
    assert validate_dataset(path, "batch") == []


def test_empty_batch_files(tmp_path):
    assert problems_of(tmp_path, b"", "batch") == [("empty_file", None)]
    assert problems_of(tmp_path, BOM, "batch") == [("byte_order_mark", None), ("empty_file", None)]
    assert problems_of(tmp_path, b"\n", "batch") == [("empty_file", None), ("invalid_json_line", 1)]


def test_file_too_large(tmp_path):
    data = jsonl(batch(10))
    assert problems_of(tmp_path, data, "batch", max_bytes=len(data)) == []
    assert problems_of(tmp_path, data, "batch", max_bytes=len(data) - 1) == [("file_too_large", None)]


def test_a_bom_is_a_batch_problem_quoting_azure_but_the_first_line_is_still_read(tmp_path):
    found = validate_dataset(write(tmp_path, BOM + jsonl(batch(3))), "batch")
    assert [(p.code, p.line) for p in found] == [("byte_order_mark", None)]
    assert "A valid model deployment name couldn't be extracted from the input file" in found[0].message
    found = problems_of(tmp_path, BOM + b'{"bad"\n' + jsonl(batch(1)), "batch")
    assert found == [("byte_order_mark", None), ("invalid_json_line", 1)]


def test_a_trailing_newline_is_fine_but_a_blank_last_line_is_not(tmp_path):
    data = jsonl(batch(2))
    assert problems_of(tmp_path, data.rstrip(b"\n"), "batch") == []
    assert problems_of(tmp_path, data + b"\n", "batch") == [("invalid_json_line", 3)]


def test_whitespace_around_a_line_and_crlf_endings_are_fine(tmp_path):
    lines = [json.dumps(r, indent=None, separators=(" , ", " : ")) for r in batch(3)]
    data = f"  {lines[0]}\r\n{lines[1]}\t\r\n{lines[2]}\r\n".encode()
    assert problems_of(tmp_path, data, "batch") == []


def test_line_problems_are_capped_whole_file_ones_always_listed(tmp_path):
    data = jsonl(batch(5)) + b"oops\n" * 150
    found = validate_dataset(write(tmp_path, data), "batch", max_requests=10, max_bytes=100)
    assert [p.code for p in found[:2]] == ["file_too_large", "too_many_tasks"]
    assert [(p.code, p.line) for p in found[2:102]] == [("invalid_json_line", n) for n in range(6, 106)]
    assert found[102] == DatasetProblem(
        "more_problems", None, "50 more lines have problems; only the first 100 problems are listed"
    )
    assert len(found) == 103


def test_line_numbers_hold_across_read_chunks(tmp_path):
    count = 3 * READ_CHUNK // len(json.dumps(request("r1")).encode()) + 10
    records = batch(count)
    records[count // 2] = {**request("broken"), "custom_id": ""}
    data = jsonl(records) + b"{bad}"
    found = problems_of(tmp_path, data, "batch")
    assert found == [("invalid_request", count // 2 + 1), ("invalid_json_line", count + 1)]


def test_non_utf8_bytes_in_a_chunk_only_mark_their_own_line(tmp_path):
    records = [json.dumps(r).encode() for r in batch(5)]
    records[3] = records[3].replace(b"Say", b"S\xe9y")
    found = validate_dataset(write(tmp_path, b"\n".join(records) + b"\n"), "batch")
    assert [(p.code, p.line) for p in found] == [("invalid_json_line", 4)]
    assert "not UTF-8" in found[0].message


def test_a_line_longer_than_the_limit_is_skipped_not_held(tmp_path):
    long_line = b'{"custom_id": "' + b"x" * (3 * READ_CHUNK) + b'"}\n'
    data = jsonl(batch(2)) + long_line + b"{bad\n" + jsonl([request("r9")])
    found = problems_of(tmp_path, data, "batch", max_bytes=READ_CHUNK)
    assert found == [("file_too_large", None), ("invalid_json_line", 4)]
    scan = scan_dataset(open_source(write(tmp_path, data)), "batch", max_bytes=READ_CHUNK)
    assert scan.lines == 5 and scan.bytes == len(data)


def test_max_requests_bounds_the_remembered_ids(tmp_path):
    # Past the limit ids are no longer remembered: the file is too large for one batch anyway.
    data = jsonl([request("a"), request("b"), request("c"), request("c")])
    assert problems_of(tmp_path, data, "batch", max_requests=2) == [("too_many_tasks", None)]


# --- fine-tune ------------------------------------------------------------------------------------------

VALID_EXAMPLES = {
    "plain": CHAT_LINE,
    "multi-turn": chat(user("a"), assistant("b"), user("c"), assistant("d")),
    "developer role": chat({"role": "developer", "content": "Be brief."}, user(), assistant()),
    "weight 0 and 1": chat(user(), assistant(weight=0), user(), assistant(weight=1)),
    "tool calling": {
        "messages": [
            user("What is the weather in San Francisco?"),
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "call_id",
                        "type": "function",
                        "function": {"name": "get_current_weather", "arguments": '{"location": "SF"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_id", "content": "21.0"},
            assistant("It is 21 degrees celsius in San Francisco, CA"),
        ],
        "tools": [{"type": "function", "function": {"name": "get_current_weather", "parameters": {}}}],
    },
    "tool call with null content": chat(
        user(), {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "function"}]}
    ),
    "function calling": {
        "messages": [
            user("Weather?"),
            {"role": "assistant", "function_call": {"name": "get_current_weather", "arguments": "{}"}},
            {"role": "function", "name": "get_current_weather", "content": "21.0"},
            assistant("21 degrees."),
        ],
        "functions": [{"name": "get_current_weather", "parameters": {}}],
    },
    "vision": chat(
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What's in this image?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
            ],
        },
        assistant("A cat."),
    ),
    "name and refusal": chat({"role": "user", "name": "bob", "content": "Hi"}, assistant(refusal=None)),
    "unknown top-level keys": {**CHAT_LINE, "metadata": {"source": "x"}, "parallel_tool_calls": False},
    "legacy prompt/completion": {"prompt": "2 + 2 =", "completion": " 4"},
    # Direct preference optimization (fine-tuning-direct-preference-optimization.md's format)
    "preference": {
        "input": {"messages": [user("Cold in SF?")], "tools": [], "parallel_tool_calls": True},
        "preferred_output": [assistant("About 14 degrees today.")],
        "non_preferred_output": [assistant("Look it up.")],
    },
    "preference with a tool answer": {
        "input": {"messages": [{"role": "system", "content": "Be brief."}, user()]},
        "preferred_output": [
            {"role": "assistant", "tool_calls": [{"id": "c", "type": "function"}]},
            {"role": "tool", "tool_call_id": "c", "content": "21.0"},
        ],
        "non_preferred_output": [assistant("No.")],
    },
    # Reinforcement fine-tuning: no assistant message; other keys are the grader's reference data
    "reinforcement": {"messages": [user("Which answer, A or B?")], "reference_answer": "A"},
    "reinforcement with tools": {"messages": [user()], "tools": [], "item": {"expected": 1}},
}


@pytest.mark.parametrize("example", VALID_EXAMPLES.values(), ids=VALID_EXAMPLES.keys())
def test_valid_fine_tune_data_has_no_problem(tmp_path, example):
    assert validate_dataset(write(tmp_path, jsonl([example] * 10)), "fine-tune") == []


def test_a_bom_on_a_fine_tune_file_is_fine(tmp_path):
    assert validate_dataset(write(tmp_path, BOM + jsonl([CHAT_LINE] * 10)), "fine-tune") == []


@pytest.mark.parametrize(
    ("example", "codes"),
    [
        ([1, 2], ["data_type"]),
        ("text", ["data_type"]),
        ({"prompt": "only a prompt"}, ["missing_messages_list"]),
        ({"messages": []}, ["missing_messages_list"]),
        ({"messages": "Hi"}, ["missing_messages_list"]),
        ({"prompt": "p", "completion": 5}, ["missing_messages_list"]),
        (chat({"content": "Hi"}, assistant()), ["message_missing_key"]),
        (chat({"role": "user"}, assistant()), ["message_missing_key"]),
        (chat(user(), {"role": "assistant", "tool_calls": []}), ["message_missing_key"]),
        (chat(user(), "Hi", assistant()), ["data_type"]),
        (chat({**user(), "audio": {}}, assistant()), ["message_unrecognized_key"]),
        (chat({"role": "robot", "content": "Hi"}, assistant()), ["unrecognized_role"]),
        (chat({"role": 5, "content": "Hi"}, assistant()), ["unrecognized_role"]),
        (chat({"role": ["user"], "content": "Hi"}, assistant()), ["unrecognized_role"]),
        (chat({"role": {"user": 1}, "content": "Hi"}, assistant()), ["unrecognized_role"]),
        (chat(user(""), assistant()), ["missing_content"]),
        (chat({"role": "user", "content": None}, assistant()), ["missing_content"]),
        (chat({"role": "user", "content": []}, assistant()), ["missing_content"]),
        (chat({"role": "user", "content": [{"text": "no type"}]}, assistant()), ["missing_content"]),
        (chat({"role": "user", "content": 42}, assistant()), ["missing_content"]),
        (
            chat(user(), {"role": "assistant", "content": 5, "function_call": {"name": "f"}}),
            ["missing_content"],
        ),
        (chat({"role": "system", "content": "Be brief."}, user()), ["example_missing_assistant_message"]),
        ({**chat(user()), "tools": []}, ["example_missing_assistant_message"]),
        ({"input": {"messages": [user()]}, "preferred_output": [assistant()]}, ["missing_messages_list"]),
        ({"input": [user()], "preferred_output": [], "non_preferred_output": []}, ["missing_messages_list"]),
        (
            {"input": {}, "preferred_output": [assistant()], "non_preferred_output": [assistant()]},
            ["missing_messages_list"],
        ),
        (
            {
                "input": {"messages": [user()]},
                "preferred_output": [user()],
                "non_preferred_output": [assistant()],
            },
            ["unrecognized_role", "example_missing_assistant_message"],
        ),
        (
            {
                "input": {"messages": [user()]},
                "preferred_output": [assistant()],
                "non_preferred_output": [assistant()],
                "x": 1,
            },
            ["unrecognized_key"],
        ),
        (
            {
                "input": {"messages": [user("")]},
                "preferred_output": [assistant(weight=3)],
                "non_preferred_output": [assistant()],
            },
            ["missing_content", "invalid_weight"],
        ),
        ({"messages": [{"role": "robot", "content": "Hi"}], "reference_answer": "A"}, ["unrecognized_role"]),
        (chat(user(), assistant(weight=2)), ["invalid_weight"]),
        (chat(user(), assistant(weight=True)), ["invalid_weight"]),
        (chat(user(), assistant(weight=1.0)), ["invalid_weight"]),
        (chat({**user(), "weight": 0}, assistant()), ["invalid_weight"]),
        (
            chat({"role": "robot", "extra": 1}, {"role": "system", "content": ""}),
            [
                "unrecognized_role",
                "message_unrecognized_key",
                "message_missing_key",
                "missing_content",
                "example_missing_assistant_message",
            ],
        ),
    ],
)
def test_each_fine_tune_problem_is_found_on_its_line(tmp_path, example, codes):
    data = fine_tune_file(CHAT_LINE, example, CHAT_LINE)
    assert problems_of(tmp_path, data, "fine-tune") == [(code, 2) for code in codes]


def test_fine_tune_messages_say_what_to_fix(tmp_path):
    data = fine_tune_file(chat(user(), assistant(weight=2)), chat(user("a")))
    found = validate_dataset(write(tmp_path, data), "fine-tune")
    assert [p.message for p in found] == [
        "Line 1: messages[1].weight is 2; it must be 0 or 1",
        "Line 2: has no assistant message; each example needs at least one answer to learn from",
    ]


def test_fine_tune_whole_file_problems(tmp_path):
    assert problems_of(tmp_path, jsonl([CHAT_LINE] * 9), "fine-tune") == [("too_few_examples", None)]
    assert problems_of(tmp_path, jsonl([CHAT_LINE] * 10), "fine-tune") == []
    assert problems_of(tmp_path, b"", "fine-tune") == [("empty_file", None)]
    assert problems_of(tmp_path, BOM, "fine-tune") == [("empty_file", None)]
    data = jsonl([CHAT_LINE] * 10)
    assert problems_of(tmp_path, data, "fine-tune", max_bytes=len(data) - 1) == [("file_too_large", None)]
    found = problems_of(tmp_path, b"{\n" + jsonl([CHAT_LINE]), "fine-tune")
    assert found == [("too_few_examples", None), ("invalid_json_line", 1)]


def test_the_fast_path_reports_exactly_what_the_slow_path_does(tmp_path):
    # The same examples with every key order and with spaces (fast parse refused): the same problems.
    examples = [CHAT_LINE, chat(user(), assistant(weight=3)), chat(user(""), assistant()), chat(user())]
    plain = jsonl(examples * 3)
    spaced = b"".join(b" " + json.dumps(e, sort_keys=True).encode() + b" \n" for e in examples * 3)
    assert problems_of(tmp_path, plain, "fine-tune") == problems_of(tmp_path, spaced, "fine-tune")
    records = [request("a"), request("b", model="x"), request("a"), {**request("c"), "method": "GET"}]
    plain, spaced = jsonl(records), b"".join(b"\t" + json.dumps(r).encode() + b"\r\n" for r in records)
    assert problems_of(tmp_path, plain, "batch") == problems_of(tmp_path, spaced, "batch")
    expected = [("model_mismatch", 2), ("duplicate_custom_id", 3), ("invalid_method", 4)]
    assert problems_of(tmp_path, plain, "batch") == expected


_VALUES = st.sampled_from(
    ["", "x", "POST", "GET", "/chat/completions", "/v1/embeddings", "m", 0, 1, 2, None, []]
)
_BATCH_RECORDS = st.one_of(
    st.builds(
        request, st.sampled_from(["a", "b", "c"]), st.sampled_from(["m", "n"]), st.sampled_from(BATCH_URLS)
    ),
    st.dictionaries(
        st.sampled_from(["custom_id", "method", "url", "body"]), _VALUES | st.just({"model": "m"})
    ),
)
_MESSAGES = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "tool", "robot"])},
    optional={"content": _VALUES, "weight": _VALUES, "tool_calls": st.just([{"id": "c"}]), "extra": _VALUES},
)
_EXAMPLES = st.one_of(st.builds(chat, _MESSAGES, _MESSAGES), st.builds(lambda m: {"messages": m}, _VALUES))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch_records=st.lists(_BATCH_RECORDS, max_size=12), examples=st.lists(_EXAMPLES, max_size=12))
def test_the_fast_path_never_changes_what_is_found(tmp_path, batch_records, examples):
    """Padded lines never take the fast path: both files must give the same problems, line for line."""
    for purpose, records in (("batch", batch_records), ("fine-tune", examples)):
        plain = jsonl(records)
        padded = b"".join(b" " + json.dumps(r).encode() + b"\n" for r in records)
        found = validate_dataset(write(tmp_path, plain), purpose)
        assert found == validate_dataset(write(tmp_path, padded, "padded.jsonl"), purpose)


# --- arguments, sources, scans --------------------------------------------------------------------------


def test_other_purposes_are_not_checked(tmp_path):
    assert validate_dataset(write(tmp_path, b"\x00not json at all"), "assistants") == []
    assert validate_dataset(write(tmp_path, b"garbage"), "user_data") == []


@pytest.mark.parametrize("purpose", ["Batch", "fine_tune", "", "bogus", " batch"])
def test_a_purpose_no_surface_knows_is_refused_not_left_unchecked(tmp_path, purpose):
    with pytest.raises(AzureOpenAIInvalidArgumentError, match="purpose") as raised:
        validate_dataset(write(tmp_path, b"garbage"), purpose)
    assert raised.value.argument == "purpose" and "fine-tune" in str(raised.value)


def _memory_object_path(path: str):
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    try:
        from airflow.sdk.io import attach
    except ImportError:  # Airflow 2
        from airflow.io.store import attach
    attach(protocol="memory", conn_id="aoai_datasets_memory", fs=fsspec.filesystem("memory"))
    return ObjectStoragePath(f"memory://{path}", conn_id="aoai_datasets_memory")


def _memory_url(data: bytes) -> str:
    url = f"memory://datasets-{uuid.uuid4().hex}/data.jsonl"
    with fsspec.open(url, "wb") as out:
        out.write(data)
    return url


@pytest.mark.parametrize("kind", ["str", "path", "file url", "memory url", "object path", "file object"])
def test_every_kind_of_source(tmp_path, kind):
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    data = jsonl([request("a"), request("b", model="other")])
    path = write(tmp_path, data)
    if kind == "memory url":
        source = _memory_url(data)
    elif kind == "object path":
        source = _memory_object_path(f"datasets-{uuid.uuid4().hex}/data.jsonl")
        source.write_bytes(data)
    elif kind == "file object":
        source = path.open("rb")
    else:
        source = {"str": str(path), "path": path, "file url": f"file://{path}"}[kind]
    assert [(p.code, p.line) for p in validate_dataset(source, "batch")] == [("model_mismatch", 2)]
    if kind == "file object":
        source.close()
    local = ObjectStoragePath(f"file://{path}")
    assert [p.code for p in validate_dataset(local, "batch")] == ["model_mismatch"]


@pytest.mark.parametrize(
    ("arguments", "argument"),
    [
        ({"source": None}, "source"),
        ({"source": "/nowhere/x.jsonl"}, "source"),
        ({"source": b"{}"}, "source"),
        ({"purpose": 5}, "purpose"),
        ({"purpose": None}, "purpose"),
        ({"max_requests": 0}, "max_requests"),
        ({"max_requests": 100_001}, "max_requests"),
        ({"max_requests": "10"}, "max_requests"),
        ({"max_requests": True}, "max_requests"),
        ({"max_bytes": 0}, "max_bytes"),
        ({"max_bytes": 2.5}, "max_bytes"),
    ],
)
def test_bad_arguments_are_named(tmp_path, arguments, argument):
    call = {"source": write(tmp_path, jsonl(batch(1))), "purpose": "batch", **arguments}
    with pytest.raises(AzureOpenAIInvalidArgumentError) as caught:
        validate_dataset(**call)
    assert caught.value.argument == argument


def test_scan_gives_the_md5_lines_and_bytes_of_what_it_read(tmp_path):
    data = BOM + jsonl(batch(20)) + b'{"last": "line", "without": "newline"}'
    source = open_source(write(tmp_path, data))
    scan = scan_dataset(source, "batch", md5=True)
    assert scan.md5 == hashlib.md5(data).hexdigest()
    assert (scan.lines, scan.bytes) == (21, len(data))
    assert [(p.code, p.line) for p in scan.problems] == [("byte_order_mark", None)] + [
        ("invalid_request", 21)
    ] * 4
    assert scan_dataset(source, "batch").md5 is None
    other = scan_dataset(source, "assistants", md5=True)
    assert (other.problems, other.md5, other.lines) == ([], hashlib.md5(data).hexdigest(), 21)
    binary = b"\x00" * (3 * READ_CHUNK) + b"\n" + b"\x01" * READ_CHUNK  # no line is held in memory
    other = scan_dataset(open_source(write(tmp_path, binary, "blob.bin")), "assistants", md5=True)
    assert (other.problems, other.md5, other.lines, other.bytes) == (
        [],
        hashlib.md5(binary).hexdigest(),
        2,
        len(binary),
    )
    with pytest.raises(AzureOpenAIInvalidArgumentError) as caught:
        scan_dataset(source, "batch", md5="yes")  # type: ignore[arg-type]
    assert caught.value.argument == "md5"


def test_scan_md5_of_a_large_file(tmp_path):
    data = jsonl([CHAT_LINE] * (2 * READ_CHUNK // 100))
    scan = scan_dataset(open_source(write(tmp_path, data)), "fine-tune", md5=True)
    assert (scan.md5, scan.bytes, scan.lines, scan.problems) == (
        hashlib.md5(data).hexdigest(),
        len(data),
        data.count(b"\n"),
        [],
    )


def test_problems_serialise_to_plain_json():
    problem = DatasetProblem("model_mismatch", 7, "Line 7: ...")
    assert problem.to_json() == {"code": "model_mismatch", "line": 7, "message": "Line 7: ..."}
    assert json.loads(json.dumps(problem.to_json())) == problem.to_json()


# --- split_batch_file ----------------------------------------------------------------------------------


def _raw_line(record: dict, style: int) -> bytes:
    """The same request written in different ways: the shards must keep each line's own bytes."""
    if style == 0:
        return json.dumps(record).encode() + b"\n"
    if style == 1:
        return json.dumps(record, separators=(",", ":")).encode() + b"\n"
    return b" " + json.dumps(record, indent=None, ensure_ascii=False).encode() + b"\r\n"


def _mixed_input() -> tuple[bytes, list[bytes]]:
    lines = []
    for n in range(10):
        model = ("gpt-4o-mini", "gpt-4o", "o3 mini")[n % 3]
        url = "/v1/chat/completions" if n in (4, 7) else "/chat/completions"
        lines.append(_raw_line(request(f"é{n}", model=model, url=url), n % 3))
    return b"".join(lines), lines


def test_split_groups_by_deployment_and_url_keeping_bytes_and_order(tmp_path):
    data, lines = _mixed_input()
    source = write(tmp_path, data, "input.jsonl")
    shards = split_batch_file(source, tmp_path / "out", max_requests=2)
    # Lines 1-10: models mini, 4o, o3 mini in turn; lines 5 and 8 (both gpt-4o) call the v1 url.
    expected = {
        "input-gpt-4o-mini-chat_completions-0000.jsonl": lines[0] + lines[3],
        "input-gpt-4o-mini-chat_completions-0001.jsonl": lines[6] + lines[9],
        "input-gpt-4o-chat_completions-0000.jsonl": lines[1],
        "input-o3_mini-chat_completions-0000.jsonl": lines[2] + lines[5],
        "input-o3_mini-chat_completions-0001.jsonl": lines[8],
        "input-gpt-4o-v1_chat_completions-0000.jsonl": lines[4] + lines[7],
    }
    assert shards == [str(tmp_path / "out" / name) for name in expected]
    assert {Path(s).name: Path(s).read_bytes() for s in shards} == expected
    for shard in shards:
        assert validate_dataset(shard, "batch") == []


def test_split_limits_each_shard_by_bytes(tmp_path):
    lines = [json.dumps(r).encode() + b"\n" for r in batch(7)]
    size = max(len(line) for line in lines)
    shards = split_batch_file(write(tmp_path, b"".join(lines)), tmp_path / "out", max_bytes=2 * size)
    assert [Path(s).read_bytes() for s in shards] == [
        lines[0] + lines[1],
        lines[2] + lines[3],
        lines[4] + lines[5],
        lines[6],
    ]
    assert all(Path(s).stat().st_size <= 2 * size for s in shards)


def test_split_drops_the_bom_and_ends_the_last_line(tmp_path):
    first, last = json.dumps(request("a")).encode(), json.dumps(request("b")).encode()
    shards = split_batch_file(write(tmp_path, BOM + first + b"\n" + last), tmp_path / "out")
    assert len(shards) == 1 and Path(shards[0]).read_bytes() == first + b"\n" + last + b"\n"


def test_split_is_deterministic_and_a_rerun_overwrites(tmp_path):
    data, _ = _mixed_input()
    source = write(tmp_path, data)
    first = split_batch_file(source, tmp_path / "out", max_requests=2)
    contents = [Path(s).read_bytes() for s in first]
    Path(first[0]).write_bytes(b"stale")
    again = split_batch_file(str(source), str(tmp_path / "out"), max_requests=2)
    assert again == first
    assert [Path(s).read_bytes() for s in again] == contents
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(Path(s).name for s in first)


def test_split_names_apart_groups_whose_slugs_clash(tmp_path):
    data = jsonl([request("a", model="gpt 4o"), request("b", model="gpt_4o"), request("c", model="GPT_4o")])
    names = [Path(s).name for s in split_batch_file(write(tmp_path, data, "b.jsonl"), tmp_path / "out")]
    assert names[0] == "b-gpt_4o-chat_completions-0000.jsonl"
    assert names[1].startswith("b-gpt_4o.") and names[1].endswith("-chat_completions-0000.jsonl")
    assert names[2].startswith("b-GPT_4o.") and len({n.lower() for n in names}) == 3
    again = [Path(s).name for s in split_batch_file(tmp_path / "b.jsonl", tmp_path / "out2")]
    assert again == names


def test_split_to_an_object_storage_path(tmp_path):
    data, lines = _mixed_input()
    destination = _memory_object_path(f"split-{uuid.uuid4().hex}/shards")
    shards = split_batch_file(write(tmp_path, data, "in.jsonl"), destination, max_requests=100)
    assert shards == [str(destination / Path(s).name) for s in shards]
    assert len(shards) == 4
    assert (destination / "in-o3_mini-chat_completions-0000.jsonl").read_bytes() == lines[2] + lines[
        5
    ] + lines[8]
    assert (destination / "in-gpt-4o-v1_chat_completions-0000.jsonl").read_bytes() == lines[4] + lines[7]
    # The URI carries the path's connection id: ObjectStoragePath(uri) opens the shard again.
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    assert validate_dataset(ObjectStoragePath(shards[-1]), "batch") == []


def test_split_to_an_fsspec_url_and_from_one(tmp_path):
    data, lines = _mixed_input()
    root = f"memory://split-{uuid.uuid4().hex}/out"
    shards = split_batch_file(_memory_url(data), root)
    assert shards[0] == f"{root}/data-gpt-4o-mini-chat_completions-0000.jsonl"
    with fsspec.open(shards[0], "rb") as stream:
        assert stream.read() == lines[0] + lines[3] + lines[6] + lines[9]
    assert [p.code for s in shards for p in validate_dataset(s, "batch")] == []


def test_split_to_a_file_url(tmp_path):
    data, _ = _mixed_input()
    shards = split_batch_file(write(tmp_path, data), f"file://{tmp_path}/new/folder")
    assert shards[0] == f"{tmp_path}/new/folder/data-gpt-4o-mini-chat_completions-0000.jsonl"
    assert all(Path(s).is_file() for s in shards)


def _large_then_bad(bad: bytes) -> tuple[bytes, int]:
    """More than a read chunk of good lines (so that shards are written before the bad line), then ``bad``."""
    count = 2 * READ_CHUNK // 150
    good = jsonl(batch(count // 2, model="a") + batch(count // 2, model="b"))
    return good + bad, good.count(b"\n") + 1


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (b"{oops\n", "invalid_json_line"),
        (json.dumps({**request("z"), "method": "GET"}).encode() + b"\n", "invalid_method"),
        (json.dumps(request("z", url="/v1/embeddings")).encode() + b"\n", "invalid_url"),
        (json.dumps({**request("z"), "body": []}).encode() + b"\n", "invalid_request"),
        (json.dumps(request("r1", model="a")).encode() + b"\n", "duplicate_custom_id"),
        (b"\n" + json.dumps(request("z")).encode(), "invalid_json_line"),
    ],
)
def test_an_invalid_input_leaves_no_shard_behind(tmp_path, bad, code):
    data, line = _large_then_bad(bad)
    out = tmp_path / "out"
    with pytest.raises(AzureOpenAIDatasetError) as caught:
        split_batch_file(write(tmp_path, data), out)
    assert caught.value.argument == "source"
    assert [(p.code, p.line) for p in caught.value.problems] == [(code, line)]
    assert list(out.iterdir()) == []


def test_an_invalid_input_leaves_no_shard_behind_in_an_object_store(tmp_path):
    data, line = _large_then_bad(b"{oops\n")
    root = f"memory://split-{uuid.uuid4().hex}/out"
    with pytest.raises(AzureOpenAIDatasetError) as caught:
        split_batch_file(write(tmp_path, data), root)
    assert [(p.code, p.line) for p in caught.value.problems] == [("invalid_json_line", line)]
    assert fsspec.filesystem("memory").find(root.removeprefix("memory://")) == []


def test_split_problems(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(AzureOpenAIDatasetError) as caught:
        split_batch_file(write(tmp_path, b""), out)
    assert [(p.code, p.line) for p in caught.value.problems] == [("empty_file", None)]
    long = json.dumps(request("long", model="m" * 300)).encode()
    with pytest.raises(AzureOpenAIDatasetError) as caught:
        split_batch_file(write(tmp_path, jsonl(batch(2)) + long + b"\n"), out, max_bytes=300)
    assert [(p.code, p.line) for p in caught.value.problems] == [("line_too_large", 3)]
    # A custom_id may repeat in another shard (another batch file), not within one.
    repeated = jsonl([request("a"), request("b"), request("a")])
    assert len(split_batch_file(write(tmp_path, repeated), out, max_requests=2)) == 2
    with pytest.raises(AzureOpenAIDatasetError) as caught:
        split_batch_file(write(tmp_path, repeated), out, max_requests=3)
    assert [(p.code, p.line) for p in caught.value.problems] == [("duplicate_custom_id", 3)]
    assert caught.value.problems[0].message == "Line 3: custom_id 'a' is already in this shard"


@pytest.mark.parametrize(
    ("arguments", "argument"),
    [
        ({"source": None}, "source"),
        ({"source": "/nowhere/in.jsonl"}, "source"),
        ({"destination": None}, "destination"),
        ({"destination": ""}, "destination"),
        ({"destination": 5}, "destination"),
        ({"destination": "FILE"}, "destination"),
        ({"max_requests": 0}, "max_requests"),
        ({"max_requests": 100_001}, "max_requests"),
        ({"max_requests": None}, "max_requests"),
        ({"max_bytes": 0}, "max_bytes"),
        ({"max_bytes": 1_000_000_001}, "max_bytes"),
        ({"max_bytes": "200"}, "max_bytes"),
    ],
)
def test_split_bad_arguments_are_named(tmp_path, arguments, argument):
    source = write(tmp_path, jsonl(batch(2)))
    call = {"source": source, "destination": tmp_path / "out", **arguments}
    if call["destination"] == "FILE":
        call["destination"] = source
    with pytest.raises(AzureOpenAIInvalidArgumentError) as caught:
        split_batch_file(**call)
    assert caught.value.argument == argument
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


# --- service_verdict -----------------------------------------------------------------------------------


def test_service_verdict_on_fine_tune_files(tmp_path):
    assert service_verdict(write(tmp_path, jsonl([CHAT_LINE] * 10)), "fine-tune") is None
    assert (
        service_verdict(write(tmp_path, jsonl([CHAT_LINE] * 2)), "fine-tune") is None
    )  # checked at job start
    assert service_verdict(write(tmp_path, BOM + jsonl([CHAT_LINE])), "fine-tune") is None
    bad_json = jsonl([CHAT_LINE, CHAT_LINE]) + b"{not json\n" + jsonl([chat(user())])
    assert (
        service_verdict(write(tmp_path, bad_json), "fine-tune")
        == "Validation of jsonl file failed: Deserialization of line #2 failed."
    )
    assert (
        service_verdict(write(tmp_path, b"oops\n"), "fine-tune")
        == "Validation of jsonl file failed: Deserialization of line #0 failed."
    )
    no_answer = jsonl([CHAT_LINE, chat(user()), chat(user(), assistant(weight=2))])
    assert service_verdict(write(tmp_path, no_answer), "fine-tune") == (
        "Validation of jsonl file failed: Line 2: has no assistant message; each example needs at least one "
        "answer to learn from"
    )
    assert service_verdict(write(tmp_path, b""), "fine-tune") == (
        "Validation of jsonl file failed: the file holds no training example"
    )


def test_service_verdict_on_batch_files(tmp_path):
    assert service_verdict(write(tmp_path, jsonl(batch(3))), "batch") is None
    # Checked when a batch job is created, not when the file is stored:
    job_level = jsonl([request("a"), request("b", model="x"), request("c", url="/v1/responses")])
    assert (
        service_verdict(write(tmp_path, job_level + jsonl([request("d", url="/v1/embeddings")])), "batch")
        is None
    )
    assert service_verdict(write(tmp_path, b""), "batch") is None
    verdict = service_verdict(write(tmp_path, BOM + jsonl(batch(2))), "batch")
    assert verdict is not None and verdict.startswith(
        "Validation of jsonl file failed: a UTF-8 BOM starts the file"
    )
    assert "A valid model deployment name couldn't be extracted" in verdict
    assert service_verdict(write(tmp_path, jsonl(batch(2)) + b"{x\n"), "batch").startswith(
        "Validation of jsonl file failed: Line 3: is not valid JSON"
    )
    get = jsonl([*batch(1), {**request("z"), "method": "GET"}])
    assert service_verdict(write(tmp_path, get), "batch") == (
        "Validation of jsonl file failed: Line 2: method is 'GET'; batch requests use \"POST\""
    )
    duplicate = jsonl([request("a", model="x"), request("a", model="y")])
    assert service_verdict(write(tmp_path, duplicate), "batch") == (
        "Validation of jsonl file failed: Line 2: custom_id 'a' is also on line 1; make ids unique"
    )
    assert service_verdict(write(tmp_path, b"[]\n"), "batch").startswith(
        "Validation of jsonl file failed: Line 1: is a JSON list"
    )


def test_service_verdict_on_other_purposes(tmp_path):
    assert service_verdict(write(tmp_path, b"\x00\x01 not json"), "assistants") is None


def test_the_issue_s_refused_files(tmp_path):
    """The eight files the issue lists as refused by Azure, each with its code."""
    cases = [
        ("batch", jsonl([request("a"), request("b", model="gpt-4o")]), {}, "model_mismatch"),
        ("batch", jsonl([request("a"), request("b", url="/v1/chat/completions")]), {}, "url_mismatch"),
        ("batch", jsonl([request("a", url="/v1/embeddings")]), {}, "invalid_url"),
        ("batch", BOM + jsonl([request("a")]), {}, "byte_order_mark"),
        ("batch", jsonl(batch(11)), {"max_requests": 10}, "too_many_tasks"),
        ("fine-tune", fine_tune_file(chat(user())), {}, "example_missing_assistant_message"),
        ("fine-tune", jsonl([CHAT_LINE] * 9), {}, "too_few_examples"),
        ("fine-tune", fine_tune_file(chat(user(), assistant(weight=2))), {}, "invalid_weight"),
    ]
    for purpose, data, limits, code in cases:
        assert [p.code for p in validate_dataset(write(tmp_path, data), purpose, **limits)] == [code]
