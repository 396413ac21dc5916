"""The service's two file backends, as recordings of the live service show them (``tests/specs/recordings``).

Azure OpenAI keeps files in two places, and each answers in its own way, on every surface:

* **the Azure files backend** holds ``fine-tune`` and ``batch`` files (and ``fine-tune-results``,
  ``batch_output``): ids ``file-<32 hex>``; bodies ``status, bytes, purpose, filename, id, created_at,
  object`` with ``status_details`` only on a failure and ``expires_at`` only when an expiry was set; no
  ``X-Request-ID`` on its answers;
* **the assistants backend** holds the other purposes (``assistants``, ``assistants_output``, ``vision``,
  ``user_data``, ``evals``), lists files and runs the Uploads API: ids ``assistant-<22 alphanumerics>``
  (uploads ``assistant-upload_<24 alphanumerics>``); bodies ``object, id, purpose, filename, bytes,
  created_at, expires_at, status, status_details`` with ``null`` for what is not set; ``X-Request-ID`` on
  every answer.

This module says which backend a purpose or an id belongs to, mints ids, shapes a File as its backend
answers it and tells which answers carry ``X-Request-ID``. No I/O and no web stack here.
"""

from __future__ import annotations

import secrets
import string
import uuid
from collections.abc import Mapping
from typing import Any

ASSISTANTS_PURPOSES = frozenset({"assistants", "assistants_output", "vision", "user_data", "evals"})
FILE_ID_PREFIX = "file-"
ASSISTANT_ID_PREFIX = "assistant-"
UPLOAD_ID_PREFIX = "assistant-upload_"
ASSISTANT_ID_CHARS = 22  # Nov/Dec 2025 answers; older ones had 24
UPLOAD_ID_CHARS = 24
_ALPHANUMERICS = string.ascii_letters + string.digits

# Key order of each backend's File, as recorded.
ASSISTANTS_KEYS = (
    "object",
    "id",
    "purpose",
    "filename",
    "bytes",
    "created_at",
    "expires_at",
    "status",
    "status_details",
)
AZURE_FILES_KEYS = (
    "status_details",
    "status",
    "bytes",
    "purpose",
    "filename",
    "id",
    "created_at",
    "expires_at",  # where the recordings are silent: beside created_at
    "object",
)
# Keys the Azure files backend leaves out unless they have a value.
_AZURE_FILES_OPTIONAL = frozenset({"status_details", "expires_at"})

# Set by a create's handler on an answer of the assistants backend (the purpose is only known from the
# body); the outermost layer turns it into X-Request-ID and never sends it.
ASSISTANTS_MARK = "x-aoai-emulator-assistants-backend"


def is_assistants_purpose(purpose: str) -> bool:
    return purpose in ASSISTANTS_PURPOSES


def is_assistants_file(file_id: str) -> bool:
    """An id the assistants backend minted: the service routes a file by its id's prefix."""
    return file_id.startswith(ASSISTANT_ID_PREFIX)


def _alphanumerics(count: int) -> str:
    return "".join(secrets.choice(_ALPHANUMERICS) for _ in range(count))


def new_file_id(purpose: str) -> str:
    if is_assistants_purpose(purpose):
        return ASSISTANT_ID_PREFIX + _alphanumerics(ASSISTANT_ID_CHARS)
    return FILE_ID_PREFIX + uuid.uuid4().hex


def new_upload_id() -> str:
    return UPLOAD_ID_PREFIX + _alphanumerics(UPLOAD_ID_CHARS)


def judged_at_create(purpose: str) -> bool:
    """Whether a file's final status is in its create answer: ``batch`` (a 32-byte file came back
    ``processed`` from create) and the assistants backend's files (always ``processed``). Fine-tune files
    go ``pending`` -> ``running`` -> final over the emulator's processing time."""
    return purpose == "batch" or is_assistants_purpose(purpose)


def shaped(file: Mapping[str, Any], *, assistants: bool | None = None) -> dict[str, Any]:
    """``file`` with the keys, and in the order, its backend answers them.

    :param assistants: force the assistants backend's shape (``None``: the file's own backend, by its id).
        A project's OpenAI route lists every file in that shape.
    """
    if assistants is None:
        assistants = is_assistants_file(str(file.get("id", "")))
    if assistants:
        return {key: file.get(key) for key in ASSISTANTS_KEYS}
    return {
        key: file.get(key)
        for key in AZURE_FILES_KEYS
        if key not in _AZURE_FILES_OPTIONAL or file.get(key) is not None
    }


def answers_with_x_request_id(operation: str | None, params: Mapping[str, str], marked: bool) -> bool:
    """Whether the answer to ``operation`` comes from the assistants backend, which sends ``X-Request-ID``:
    uploads, the file list, anything about an ``assistant-`` file, and creates ``marked`` by their handler
    (see :data:`ASSISTANTS_MARK`)."""
    if operation is None:
        return False
    if operation.startswith("uploads.") or operation == "files.list" or marked:
        return True
    return is_assistants_file(params.get("file_id", ""))
