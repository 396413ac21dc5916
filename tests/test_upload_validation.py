"""Upload operators check a batch or fine-tune dataset before their first request (``validate``, on by default
in the operators, off in the hook): an invalid file fails with the problems' codes and lines and creates
nothing; a valid one goes up, the multipart md5 taken from the check's own read. Over real HTTP to the
emulator."""

from __future__ import annotations

import json

import pytest

from airflow_provider_aoai.exceptions import AzureOpenAIDatasetError, AzureOpenAIInvalidArgumentError
from airflow_provider_aoai.operators import AzureOpenAIMultipartUploadOperator, AzureOpenAIUploadFileOperator
from tests.conftest import CHAT_LINE, jsonl

CREATES = ("files.create", "uploads.create", "uploads.part", "files.import")


def request(custom_id: str, model: str = "gpt-4o-mini") -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": "Hi"}]}
    return {"custom_id": custom_id, "method": "POST", "url": "/chat/completions", "body": body}


INVALID = {
    # (purpose, content, the first problem's (code, line))
    "two deployments": ("batch", jsonl([request("a"), request("b", model="gpt-4o")]), ("model_mismatch", 2)),
    "a bad first line": ("batch", b"{oops\n" + jsonl([request("b")]), ("invalid_json_line", 1)),
    "a JSON list first": ("fine-tune", b"[1]\n" + jsonl([CHAT_LINE] * 10), ("data_type", 1)),
    "no answer": (
        "fine-tune",
        jsonl([CHAT_LINE] * 10 + [{"messages": [{"role": "user", "content": "Hi"}]}]),
        ("example_missing_assistant_message", 11),
    ),
    "nine examples": ("fine-tune", jsonl([CHAT_LINE] * 9), ("too_few_examples", None)),
}


def created(emulator) -> list[str]:
    return [r.operation for r in emulator.faults.requests if r.operation in CREATES]


@pytest.mark.parametrize("kind", INVALID, ids=INVALID.keys())
@pytest.mark.parametrize(
    "operator_class", [AzureOpenAIUploadFileOperator, AzureOpenAIMultipartUploadOperator]
)
def test_an_invalid_dataset_fails_the_operator_before_any_request(
    emulator, aoai_conn, tmp_path, kind, operator_class
):
    purpose, content, first = INVALID[kind]
    source = tmp_path / "data.jsonl"
    source.write_bytes(content)
    operator = operator_class(task_id="up", source=str(source), purpose=purpose)
    with pytest.raises(AzureOpenAIDatasetError) as caught:
        operator.execute({})
    assert isinstance(caught.value, AzureOpenAIInvalidArgumentError) and caught.value.argument == "source"
    assert (caught.value.problems[0].code, caught.value.problems[0].line) == first
    line = f"Line {first[1]}: " if first[1] else ""
    assert f"[{first[0]}] {line}" in str(caught.value)
    assert created(emulator) == []


def test_validate_false_skips_the_check_and_the_hook_leaves_it_off(emulator, aoai_conn, hook, tmp_path):
    source = tmp_path / "mixed.jsonl"
    source.write_bytes(INVALID["two deployments"][1])
    skipped = AzureOpenAIUploadFileOperator(task_id="up", source=str(source), purpose="batch", validate=False)
    assert skipped.execute({})["id"].startswith("file-")
    assert hook.upload_file(source=str(source), purpose="batch")["id"].startswith("file-")
    with pytest.raises(AzureOpenAIDatasetError):
        hook.upload_file(source=str(source), purpose="batch", validate=True)
    assert created(emulator) == ["files.create", "files.create"]


def test_a_first_line_nested_too_deeply_is_not_json_lines_without_the_check(emulator, hook, tmp_path):
    """Found by this round's adversarial pass (the class of its deep list answer): the cheap first-line check
    of an unvalidated upload raised RecursionError on a line nested 50,000 deep."""
    source = tmp_path / "deep.jsonl"
    source.write_bytes(b"[" * 50_000 + b"]" * 50_000 + b"\n")
    with pytest.raises(AzureOpenAIInvalidArgumentError, match="not JSON Lines"):
        hook.upload_file(source=str(source), purpose="batch")
    with pytest.raises(AzureOpenAIDatasetError, match="invalid_json_line"):
        hook.upload_file(source=str(source), purpose="batch", validate=True)
    assert created(emulator) == []


def test_validate_must_be_a_bool(aoai_conn, tmp_path):
    with pytest.raises(AzureOpenAIInvalidArgumentError, match="validate"):
        AzureOpenAIUploadFileOperator(task_id="up", source="x.jsonl", purpose="batch", validate="yes")


def test_a_valid_multipart_dataset_takes_its_md5_from_the_check(emulator, aoai_conn, tmp_path, monkeypatch):
    from airflow_provider_aoai.transfer import parts

    def no_second_pass(*args, **kwargs):
        raise AssertionError("the md5 pass ran again though the check had read the file whole")

    monkeypatch.setattr(parts, "_send_streamed", no_second_pass)
    content = jsonl([CHAT_LINE] * 40)
    source = tmp_path / "train.jsonl"
    source.write_bytes(content)
    upload = AzureOpenAIMultipartUploadOperator(
        task_id="mp", source=str(source), purpose="fine-tune", part_size=1024 * 1024
    ).execute({})
    # The emulator, like the service, refuses a complete whose md5 is not that of the parts it holds.
    assert upload["status"] == "completed" and upload["bytes"] == len(content)
    assert [r.status for r in emulator.faults.requests if r.operation == "uploads.complete"] == [200]
    with pytest.raises(AssertionError, match="md5 pass ran again"):
        AzureOpenAIMultipartUploadOperator(
            task_id="mp2", source=str(source), purpose="fine-tune", part_size=1024 * 1024, validate=False
        ).execute({})
    json.dumps(upload)


def test_other_formats_the_service_takes_go_up_validated(emulator, aoai_conn, tmp_path):
    preference = {
        "input": {"messages": [{"role": "user", "content": "Cold in SF?"}]},
        "preferred_output": [{"role": "assistant", "content": "About 14 degrees."}],
        "non_preferred_output": [{"role": "assistant", "content": "Look it up."}],
    }
    for name, example in {"dpo": preference, "rft": {**CHAT_LINE, "reference_answer": "A"}}.items():
        source = tmp_path / f"{name}.jsonl"
        source.write_bytes(jsonl([example] * 10))
        result = AzureOpenAIUploadFileOperator(task_id=name, source=str(source), purpose="fine-tune").execute(
            {}
        )
        assert result["id"].startswith("file-")
