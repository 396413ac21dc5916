"""The rules of Azure's ``batch`` and ``fine-tune`` JSON Lines files, as one streaming pass: what
:mod:`~airflow_provider_aoai.datasets` tells a user before an upload, and what the emulator tells as the
service when it processes a stored file (:func:`service_verdict`). Each limit cites its source: Azure's docs
(MicrosoftDocs/azure-ai-docs), OpenAI's where Azure defers. Pure: no I/O but the stream it is given, no HTTP,
no Airflow (the emulator imports it)."""

from __future__ import annotations

import collections
import hashlib
import json
import re
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from airflow_provider_aoai.models import MAX_UPLOAD_BYTES, MiB

SNIFF_BYTES = 1 * MiB
READ_CHUNK = 1 * MiB
HASH_AHEAD = 4  # chunks read but not yet hashed, at most (Reader)
# "Maximum requests per file | 100,000", "Maximum input file size | 200 MB", "... Bring your own storage
# (BYOS) | 1 GB": articles/foundry/openai/includes/global-batch-limits.md, in
# https://learn.microsoft.com/en-us/azure/foundry/openai/how-to/batch
MAX_BATCH_REQUESTS = 100_000
MAX_BATCH_BYTES = 200_000_000
MAX_BATCH_BYTES_BYOS = 1_000_000_000
# Azure's examples use "/chat/completions" (2025-03-01-preview: articles/ai-services/openai/includes/batch/
# batch-rest.md), "/v1/chat/completions" and "/v1/responses" (v1: articles/foundry/openai/includes/batch/
# batch-rest.md); "/responses" by analogy. Not embeddings: "Can I use the batch API for embeddings models?
# This is currently not supported." (articles/foundry/openai/how-to/batch.md, FAQ).
BATCH_URLS = ("/chat/completions", "/v1/chat/completions", "/responses", "/v1/responses")
# "Fine-tuning jobs won't proceed without at least 10 training examples" (articles/foundry/openai/includes/
# fine-tuning-rest.md, https://learn.microsoft.com/en-us/azure/foundry/openai/how-to/fine-tuning).
MIN_FINE_TUNE_EXAMPLES = 10
# The OpenAI cookbook's keys and roles (https://cookbook.openai.com/examples/chat_finetuning_data_prep), with
# tool calls (tool_calls, tool_call_id, role tool: articles/foundry/openai/how-to/fine-tuning-functions.md),
# refusal (OpenAI's FineTuneChatRequestInput) and "developer" (Chat Completions' roles: never a false alarm).
MESSAGE_KEYS = {"role", "content", "name", "weight", "function_call", "tool_calls", "tool_call_id", "refusal"}
FINE_TUNE_ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
# Supervised examples: messages, with tools/functions (fine-tuning-functions.md). Any other key makes the
# line a reinforcement example: "messages and tools are the only reserved keywords. Any other arbitrary
# key-value data can be included on training datapoints" for the grader (OpenAI's
# FineTuneReinforcementRequestInput); "instead of an assistant message, the final message in your
# training data is a reference answer" (articles/ai-services/openai/how-to/reinforcement-fine-tuning.md).
SUPERVISED_KEYS = {"messages", "tools", "functions", "parallel_tool_calls"}
# Preference (DPO) examples: "an input and exactly two outputs": input.messages (with optional tools and
# parallel_tool_calls), preferred_output and non_preferred_output, "at least one assistant message" each;
# "Output messages use the assistant or tool role" (articles/foundry-classic/openai/how-to/
# fine-tuning-direct-preference-optimization.md).
PREFERENCE_OUTPUTS = ("preferred_output", "non_preferred_output")
PREFERENCE_KEYS = {"input", *PREFERENCE_OUTPUTS}
MAX_LISTED_PROBLEMS = 100  # line problems; the lines after them are counted in one more_problems
BOM = b"\xef\xbb\xbf"
# "A UTF-8-BOM encoded file will currently return the generic error message: ..." (articles/foundry/openai/
# how-to/batch.md, Known issues). Azure's fine-tuning docs ask for a BOM instead (fine-tuning-rest.md).
_BOM_ERROR = (
    "Validation failed: A valid model deployment name couldn't be extracted from the input file. Please "
    "ensure that each row in the input file has a valid deployment name specified in the 'model' field, and "
    "that the deployment name is consistent across all rows."
)
# Checked when a job is created (batch: Azure's batch error codes) or started (the example count), not before.
_JOB_CODES = {"fine-tune": {"file_too_large", "too_few_examples"}, "batch": {"file_too_large", "empty_file"}}
_JOB_CODES["batch"] |= {"too_many_tasks", "invalid_url", "model_mismatch", "url_mismatch"}
_MISSING: Any = object()  # an absent key; as a reference value, equal to nothing
SLUG_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
Found = list[tuple[str, str]]  # (code, message without its "Line N: ")
_DECODER = json.JSONDecoder(parse_constant=int)  # int() refuses NaN and Infinity: Python's, not JSON


@dataclass(frozen=True)
class DatasetProblem:
    """One reason the service would refuse a dataset: ``code`` (Azure's where Azure names one, else the OpenAI
    cookbook's or ours), ``line`` (1-based; ``None`` for the whole file) and a ``message`` that names the line
    and says what to fix."""

    code: str
    line: int | None
    message: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DatasetScan:
    """One pass over a dataset: its problems, md5 of every byte read (if asked), lines and bytes."""

    problems: list[DatasetProblem]
    md5: str | None
    lines: int
    bytes: int


def shown(value: Any, limit: int = 60) -> str:
    text = "missing" if value is _MISSING else repr(value)
    return text if len(text) <= limit else f"{text[:limit]}..."


class Problems:
    """Problems: whole-file ones (``line`` None) always, line ones up to ``cap``, then only counted."""

    def __init__(self, cap: int = MAX_LISTED_PROBLEMS, skip: set[str] | None = None) -> None:
        self.cap, self.skip, self.listed, self.unlisted = cap, skip or set(), 0, 0
        self.found: list[DatasetProblem] = []

    def add(self, line: int | None, found: Found) -> None:
        found = [item for item in found if item[0] not in self.skip]
        room = len(found) if line is None else max(self.cap - self.listed, 0)
        self.found += [DatasetProblem(c, line, f"Line {line}: {t}" if line else t) for c, t in found[:room]]
        self.listed += min(room, len(found)) if line else 0
        self.unlisted += len(found) > room

    def __bool__(self) -> bool:
        return bool(self.found)

    def result(self) -> list[DatasetProblem]:
        more = f"{self.unlisted} more lines have problems; only the first {self.cap} problems are listed"
        tail = [DatasetProblem("more_problems", None, more)] if self.unlisted else []
        return sorted(self.found, key=lambda problem: problem.line is not None) + tail  # whole file first


def parse_line(line: str | bytes | bytearray) -> tuple[Any, Found]:
    """The slow path: one line's record (whitespace around it allowed), or why it has none."""
    if not isinstance(line, str):
        try:
            line = line.decode()
        except UnicodeDecodeError as exc:
            return None, [("invalid_json_line", f"is not UTF-8 (byte {exc.start + 1}); save it as UTF-8")]
    if not line.strip(" \t\r"):
        return None, [("invalid_json_line", "is blank; remove it (a newline at the end of the file is fine)")]
    try:
        return _DECODER.decode(line), []
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deeply
        where = f"{exc.msg} at column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else str(exc)
        return None, [("invalid_json_line", f"is not valid JSON ({where}); fix it")]


def request_problems(record: Any) -> Found:
    """A line's own problems: its shape, method and url (nothing that compares it with other lines)."""
    shape = '{"custom_id": ..., "method": "POST", "url": ..., "body": {"model": ...}}'
    if not isinstance(record, dict):
        return [("invalid_request", f"is a JSON {type(record).__name__}; make it one request {shape}")]
    found: Found = []
    add, urls = found.append, ", ".join(BATCH_URLS)
    custom_id, method, url, body = (record.get(k, _MISSING) for k in ("custom_id", "method", "url", "body"))
    if not isinstance(custom_id, str) or not custom_id:
        add(("invalid_request", f"custom_id is {shown(custom_id)}; make it a non-empty string"))
    if not isinstance(method, str):
        add(("invalid_request", f'method is {shown(method)}; it must be "POST"'))
    elif method != "POST":  # "Currently only `POST` is supported." (OpenAI's batch request input object)
        add(("invalid_method", f'method is {shown(method)}; batch requests use "POST"'))
    if not isinstance(url, str):
        add(("invalid_request", f"url is {shown(url)}; use one of {urls}"))
    elif url not in BATCH_URLS:
        add(("invalid_url", f"url {shown(url)} is not an Azure batch endpoint; use one of {urls}"))
    model = body.get("model", _MISSING) if isinstance(body, dict) else None
    if not isinstance(body, dict):
        add(("invalid_request", f"body is {shown(body)}; it must be an object, the request itself"))
    elif not isinstance(model, str) or not model:
        add(("invalid_request", f"body.model is {shown(model)}; name the Global Batch deployment"))
    return found


class _BatchRules:
    """A batch file's rules: each line's own, and one model, one url and unique custom_ids across lines."""

    def __init__(self, max_requests: int) -> None:
        self.max_requests = max_requests
        self.ids: dict[str, int] = {}  # custom_id -> its line; the first max_requests ids only
        self.first: dict[str, tuple[Any, int]] = {"url": (_MISSING, 0), "body.model": (_MISSING, 0)}
        self.url = self.model = _MISSING  # the first valid ones, for the fast path

    def fast(self, record: Any, number: int) -> bool:
        """True (and the line remembered) when the line is fine; False sends it to :meth:`problems`."""
        if type(record) is not dict or record.get("method") != "POST" or record.get("url") != self.url:
            return False
        custom_id, body = record.get("custom_id", ""), record.get("body")
        if type(body) is not dict or body.get("model") != self.model or type(custom_id) is not str:
            return False
        if custom_id == "" or custom_id in self.ids:
            return False
        if len(self.ids) < self.max_requests:
            self.ids[custom_id] = number
        return True

    def problems(self, record: Any, number: int) -> Found:
        found = request_problems(record)
        if not isinstance(record, dict):
            return found
        body, custom_id = record.get("body"), record.get("custom_id")
        url = record.get("url") if record.get("url") in BATCH_URLS else None
        model = body.get("model") if isinstance(body, dict) else None
        for key, value in (("url", url), ("body.model", model)):
            first, line = self.first[key]
            if isinstance(value, str) and value and first is _MISSING:
                self.first[key] = (value, number)
            elif isinstance(value, str) and value and value != first:
                what = "calls one endpoint" if key == "url" else "targets one deployment"
                why = f"{key} is {shown(value)} but line {line} has {shown(first)}: every line of a batch"
                found.append(
                    (f"{key[5:] or key}_mismatch", f"{why} file {what}; split it with split_batch_file")
                )
        self.url, self.model = self.first["url"][0], self.first["body.model"][0]
        if isinstance(custom_id, str) and custom_id:
            if custom_id in self.ids:
                why = f"custom_id {shown(custom_id)} is also on line {self.ids[custom_id]}; make ids unique"
                found.append(("duplicate_custom_id", why))
            elif len(self.ids) < self.max_requests:
                self.ids[custom_id] = number
        return found

    def finish(self, requests: int, problems: Problems) -> None:
        if requests > self.max_requests:
            why = f"the file holds {requests:,} requests, over {self.max_requests:,}: use split_batch_file"
            problems.add(None, [("too_many_tasks", why)])
        if not requests:
            problems.add(None, [("empty_file", "the file holds no request; a batch needs at least one")])


def _message_problems(name: str, message: Any) -> Iterator[tuple[str, str]]:
    roles = ", ".join(sorted(FINE_TUNE_ROLES))
    if not isinstance(message, dict):
        yield "data_type", f"{name} is a JSON {type(message).__name__}; make it an object"
        return
    role, content = message.get("role", _MISSING), message.get("content", _MISSING)
    # An assistant message that calls a tool may go without content (fine-tuning-functions.md's examples).
    calls = role == "assistant" and bool(message.get("tool_calls") or message.get("function_call"))
    if role is _MISSING:
        yield "message_missing_key", f"{name} has no role; give it one of {roles}"
    elif not isinstance(role, str) or role not in FINE_TUNE_ROLES:
        yield "unrecognized_role", f"{name}.role is {shown(role)}; use one of {roles}"
    if unknown := sorted(key for key in message if key not in MESSAGE_KEYS):
        yield "message_unrecognized_key", f"{name} has keys the service does not take: {', '.join(unknown)}"
    # Content: non-empty text, or a non-empty list of content parts (objects with a string "type").
    parts = isinstance(content, list) and all(type(p) is dict and type(p.get("type")) is str for p in content)
    filled = ((parts or isinstance(content, str)) and bool(content)) or (calls and content in (None, ""))
    if content is _MISSING and not calls:
        yield "message_missing_key", f"{name} has no content; add the message's text"
    elif content is not _MISSING and not filled:
        yield "missing_content", f"{name}.content is {shown(content)}; give text or content parts"
    # "weight can be set to 0 or 1" (fine-tuning-rest.md); OpenAI's spec: an integer, on assistant messages.
    weight = message.get("weight", _MISSING)
    if weight is not _MISSING and role != "assistant":
        yield "invalid_weight", f"{name} is a {shown(role)} message; only assistant messages take a weight"
    elif weight is not _MISSING and (type(weight) is not int or weight not in (0, 1)):
        yield "invalid_weight", f"{name}.weight is {shown(weight)}; it must be 0 or 1"


def _messages_problems(name: str, messages: Any) -> Found:
    if not isinstance(messages, list) or not messages:
        return [("missing_messages_list", f"{name} is {shown(messages)}; give a non-empty list")]
    return [p for n, item in enumerate(messages) for p in _message_problems(f"{name}[{n}]", item)]


def _preference_problems(record: dict[str, Any]) -> Found:
    """A preference (DPO) example: ``input.messages``, and two outputs of assistant (or tool) messages."""
    if unknown := sorted(key for key in record if key not in PREFERENCE_KEYS):
        return [("unrecognized_key", f"a preference example takes no {', '.join(unknown)}")]
    prompt = record.get("input")
    if not isinstance(prompt, dict):
        return [("missing_messages_list", f'input is {shown(prompt)}; make it {{"messages": [...]}}')]
    found = _messages_problems("input.messages", prompt.get("messages", _MISSING))
    for output in PREFERENCE_OUTPUTS:
        messages = record.get(output, _MISSING)
        found += _messages_problems(output, messages)
        if not isinstance(messages, list):
            continue
        for n, message in enumerate(messages):
            if isinstance(message, dict) and message.get("role") not in ("assistant", "tool"):
                role = shown(message.get("role"))
                found.append(("unrecognized_role", f"{output}[{n}].role is {role}; use assistant or tool"))
        if messages and not any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages):
            found.append(("example_missing_assistant_message", f"{output} has no assistant message"))
    return found


class _FineTuneRules:
    """A fine-tuning file's rules: the OpenAI cookbook's, without false alarms on tools, images, weights."""

    _PLAIN_ROLES = ("user", "assistant", "system", "developer")  # a tuple: a role may be unhashable

    def fast(self, record: Any, number: int) -> bool:
        """True for a plain chat with an answer: every message exactly a role and non-empty text."""
        messages = record.get("messages") if type(record) is dict else None
        if type(messages) is not list:
            return False
        answered = False
        for message in messages:
            if type(message) is not dict or len(message) != 2 or message.get("role") not in self._PLAIN_ROLES:
                return False
            if type(content := message.get("content")) is not str or content == "":
                return False
            answered = answered or message["role"] == "assistant"
        return answered

    def problems(self, record: Any, number: int) -> Found:
        if not isinstance(record, dict):
            return [("data_type", f'is a JSON {type(record).__name__}; make it one {{"messages": [...]}}')]
        messages = record.get("messages", _MISSING)
        legacy = isinstance(record.get("prompt"), str) and isinstance(record.get("completion"), str)
        if messages is _MISSING and legacy:
            return []  # the legacy completions format (OpenAI's FineTuneCompletionRequestInput)
        if messages is _MISSING and PREFERENCE_KEYS & record.keys():
            return _preference_problems(record)
        found = _messages_problems("messages", messages)
        graded = any(key not in SUPERVISED_KEYS for key in record)  # a reinforcement example's grader data
        answered = isinstance(messages, list) and any(
            type(m) is dict and m.get("role") == "assistant" for m in messages
        )
        if isinstance(messages, list) and messages and not graded and not answered:
            why = "has no assistant message; each example needs at least one answer to learn from"
            found.append(("example_missing_assistant_message", why))
        return found

    def finish(self, examples: int, problems: Problems) -> None:
        if not examples:
            problems.add(None, [("empty_file", "the file holds no training example")])
        elif examples < MIN_FINE_TUNE_EXAMPLES:
            why = f"the file holds {examples} examples; fine-tuning needs at least {MIN_FINE_TUNE_EXAMPLES}"
            problems.add(None, [("too_few_examples", why)])


class Reader:
    """Reads a stream once, from its start, in chunks: its lines in blocks, its size, its md5 when asked.

    The md5 is taken on a thread of its own (hashlib lets go of the GIL), up to :data:`HASH_AHEAD` chunks
    behind the lines being checked, so that it costs the check no time on a second core. Measured on a
    256 MiB fine-tuning file: hashing on the checking thread, or waiting for each chunk's hash before reading
    the next, added a third to the check; with a few chunks in flight the check takes as long as without an
    md5. A context manager: leaving it ends the hashing thread.
    """

    def __init__(self, stream: IO[bytes], *, md5: bool, longest: int) -> None:
        self.stream, self.longest = stream, longest
        self.digest = hashlib.md5(usedforsecurity=False) if md5 else None
        self._hasher = ThreadPoolExecutor(1, thread_name_prefix="aoai-md5") if md5 else None
        self._hashing: collections.deque[Future[None]] = collections.deque()
        self.size = self.lines = 0
        self._first = self._read()
        while 0 < len(self._first) < len(BOM) and (more := self._read()):
            self._first += more
        self.bom = self._first.startswith(BOM)

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._hasher is not None:
            self._hasher.shutdown(wait=True)

    def _read(self) -> bytes:
        chunk = self.stream.read(READ_CHUNK)
        self.size += len(chunk)
        if self._hasher is not None and self.digest is not None:
            while len(self._hashing) >= HASH_AHEAD:  # in order (one thread), and never more chunks held
                self._hashing.popleft().result()
            self._hashing.append(self._hasher.submit(self.digest.update, chunk))
        return chunk

    def md5(self) -> str | None:
        """The md5 of every byte read so far (``None`` when not asked for)."""
        while self._hashing:
            self._hashing.popleft().result()
        return self.digest.hexdigest() if self.digest is not None else None

    def blocks(self, text: bool) -> Iterator[tuple[int, list[Any] | None]]:
        """``(number of the first line, lines)``, without newlines and the BOM: text where it is UTF-8 (and
        ``text`` is asked for), else bytes. ``None`` stands for one line longer than ``longest``, skipped."""
        chunk, pending, skipping = self._first[len(BOM) if self.bom else 0 :], bytearray(), False
        while chunk or pending:
            if skipping and (end := chunk.find(b"\n")) >= 0:
                skipping, chunk = False, chunk[end + 1 :]
                self.lines += 1
                yield self.lines, None
            if not skipping:
                start = len(pending)
                pending += chunk
                if (cut := pending.rfind(b"\n", start) if chunk else len(pending) - 1) >= 0:
                    block, pending = pending, bytearray(pending[cut + 1 :])
                    del block[cut + 1 :]
                    try:
                        lines: list[Any] = block.decode().split("\n") if text else block.split(b"\n")
                    except UnicodeDecodeError:  # the slow path tells which line is not UTF-8
                        lines = block.split(b"\n")
                    lines = lines[:-1] if block.endswith(b"\n") else lines
                    yield self.lines + 1, lines
                    self.lines += len(lines)
                elif len(pending) > self.longest:
                    pending, skipping = bytearray(), True
            chunk = self._read()
        if skipping:
            self.lines += 1
            yield self.lines, None


def _check_lines(
    reader: Reader, rules: _BatchRules | _FineTuneRules, problems: Problems, service: bool
) -> int:
    """Every line's problems into ``problems``; returns how many lines were blank."""
    blank = 0
    for first, lines in reader.blocks(text=True):
        if lines is None:  # a line longer than max_bytes, in a file too large: not read
            continue
        fast, decode = rules.fast, _DECODER.raw_decode
        for number, line in enumerate(lines, first):
            try:  # json.loads without its whitespace skipping and its checks, for what most lines are
                record, end = decode(line)
                fine = end == len(line) and fast(record, number)
            except (ValueError, TypeError, RecursionError):  # TypeError: bytes, not UTF-8
                fine = False
            if not fine:
                record, found = parse_line(line)
                blank += bool(found) and not line.strip(" \t\r" if isinstance(line, str) else b" \t\r")
                found = found or ([] if fast(record, number) else rules.problems(record, number))
                problems.add(number, found)
        if service and problems:
            break  # the service tells its first problem only
    return blank


def scan_stream(
    stream: IO[bytes], purpose: str, tasks: int, size: int, md5: bool, service: bool
) -> DatasetScan:
    """The one pass. As the service (``service``), it skips the job's rules and stops at its first problem."""
    rules = _BatchRules(tasks) if purpose == "batch" else _FineTuneRules() if purpose == "fine-tune" else None
    problems = Problems(1, _JOB_CODES[purpose]) if service else Problems()
    with Reader(stream, md5=md5, longest=size if rules else 0) as reader:  # lines unread: none held
        if rules is None:  # nothing to check: the size and md5 only
            for _ in reader.blocks(text=False):
                pass
            return DatasetScan([], reader.md5(), reader.lines, reader.size)
        if reader.bom and purpose == "batch":
            why = f"a UTF-8 BOM starts the file: drop it ({_BOM_ERROR!r})"
            problems.add(None, [("byte_order_mark", why)])
        blank = _check_lines(reader, rules, problems, service)
        if not (service and problems):
            if reader.size > size:
                why = f"the file holds {reader.size:,} bytes, over {size:,}"
                problems.add(None, [("file_too_large", why)])
            rules.finish(reader.lines - blank, problems)
        return DatasetScan(problems.result(), reader.md5(), reader.lines, reader.size)


def service_verdict(path: Path, purpose: str) -> str | None:
    """What the service says when it processes a stored file: ``None`` when it takes it, else its
    ``status_details`` for the first problem. For the emulator.

    The rules of :func:`validate_dataset` that apply when a file is stored: not the size (the upload limit),
    the example count (Azure: "Fine-tuning jobs won't proceed without at least 10 training examples") nor
    Azure's batch error codes that compare lines or count them (at batch creation, which is not emulated). A
    fine-tuning line that is not JSON is told in the words of a recording of the real service, ``Validation
    of jsonl file failed: Deserialization of line #0 failed.`` (0-based), any other problem as ``Validation
    of jsonl file failed: <our message>``. Other purposes: ``None``.
    """
    if purpose not in _JOB_CODES:
        return None
    with path.open("rb") as stream:
        result = scan_stream(stream, purpose, MAX_BATCH_REQUESTS, MAX_UPLOAD_BYTES, md5=False, service=True)
    if not (first := result.problems[0] if result.problems else None):
        return None
    if purpose == "fine-tune" and first.code == "invalid_json_line" and first.line:
        return f"Validation of jsonl file failed: Deserialization of line #{first.line - 1} failed."
    return f"Validation of jsonl file failed: {first.message}"
