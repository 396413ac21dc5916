"""Per-purpose JSON Lines validation, as the service runs it after a file is stored.

The emulator uses it to decide ``processed`` or ``error``; DAGs can call :func:`validate_jsonl` to check a
dataset before uploading it. Returns ``None`` for a valid file or a text that names the first bad line.
Reads line by line, so multi-GB files validate in constant memory. No Airflow imports.
"""

from __future__ import annotations

import json
from pathlib import Path

FINE_TUNE_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


def _fine_tune_problem(record: dict) -> str | None:
    messages = record.get("messages")
    if messages is None:
        # The spec's FileImport text still describes the legacy prompt/completion format; accept it too.
        if isinstance(record.get("prompt"), str) and isinstance(record.get("completion"), str):
            return None
        return "expected a 'messages' list of {role, content} objects"
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty list"
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            return f"messages[{index}] is not an object"
        role = message.get("role")
        if role not in FINE_TUNE_ROLES:
            return f"messages[{index}].role {role!r} is not one of {sorted(FINE_TUNE_ROLES)}"
        if "content" not in message:
            return f"messages[{index}] has no 'content'"
        content = message["content"]
        if not (isinstance(content, (str, list)) or (content is None and role == "assistant")):
            return f"messages[{index}].content must be a string or a list of content parts"
    return None


def _batch_problem(record: dict) -> str | None:
    for field, kind in (("custom_id", str), ("method", str), ("url", str), ("body", dict)):
        if not isinstance(record.get(field), kind):
            return f"'{field}' must be a {'string' if kind is str else 'JSON object'}"
    if record["method"].upper() != "POST":
        return "'method' must be POST"
    return None


_CHECKS = {"fine-tune": _fine_tune_problem, "batch": _batch_problem}


def validate_jsonl(path: Path, purpose: str) -> str | None:
    """Validate ``path`` for ``purpose``; ``None`` if valid (or the purpose is not validated)."""
    check = _CHECKS.get(purpose)
    if check is None:
        return None
    seen_custom_ids: set[str] = set()
    count = 0
    with path.open("rb") as stream:
        for number, raw in enumerate(stream, start=1):
            if not raw.strip():
                if raw.endswith(b"\n") or number == 1:
                    return f"Line {number}: empty line; JSON Lines files hold one JSON object per line"
                continue
            try:
                record = json.loads(raw)
            except (UnicodeDecodeError, ValueError) as exc:
                return f"Line {number}: not valid JSON ({exc.__class__.__name__}: {exc})"
            if not isinstance(record, dict):
                return f"Line {number}: expected a JSON object, got {type(record).__name__}"
            problem = check(record)
            if problem:
                return f"Line {number}: {problem}"
            if purpose == "batch":
                if record["custom_id"] in seen_custom_ids:
                    return f"Line {number}: duplicate custom_id {record['custom_id']!r}"
                seen_custom_ids.add(record["custom_id"])
            count += 1
    if count == 0:
        return "The file is empty; a JSON Lines file needs at least one line"
    return None
