"""The service's vocabulary: status enums, purposes, surfaces and size limits.

Everything that decides "is this file done?" or "is this purpose allowed here?" lives in this module, so the
hook, the operators, the sensor, the trigger and the emulator all ask the same question the same way.
Nothing here does I/O or imports Airflow.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from typing import Any, TypedDict


class FileStatus(str, enum.Enum):
    """The ``FileState`` of a file (spec: ``#/definitions/FileState``)."""

    UPLOADED = "uploaded"
    PENDING = "pending"
    RUNNING = "running"
    PROCESSED = "processed"
    ERROR = "error"
    DELETING = "deleting"
    DELETED = "deleted"

    @property
    def is_terminal(self) -> bool:
        """The spec's terminal states: waiting any longer will not change the status."""
        return self in _TERMINAL_FILE_STATES

    @property
    def is_failure(self) -> bool:
        """Terminal states in which the file cannot be used."""
        return self in (FileStatus.ERROR, FileStatus.DELETED)

    @classmethod
    def of(cls, file: Mapping[str, object], *, status_optional: bool = False) -> FileStatus:
        """Status of a File/FileInfo dict.

        :param status_optional: the surface may omit the status (Foundry's FileInfo: the spec gives it for
            Azure OpenAI only), and a file without one is stored and ready. Elsewhere a missing status is
            unknown: not terminal, so callers keep waiting rather than declare success.
        """
        status = file.get("status")
        if status is None:
            return cls.PROCESSED if status_optional else cls.RUNNING
        try:
            return cls(str(status))
        except ValueError:
            # A state this version does not know yet: not terminal, so callers keep waiting (bounded by
            # their timeout) rather than crash or declare success.
            return cls.RUNNING


_TERMINAL_FILE_STATES = frozenset({FileStatus.PROCESSED, FileStatus.ERROR, FileStatus.DELETED})


class FileOutcome(str, enum.Enum):
    """Where a file stands for whoever waits for it: still going, ready, or failed for good."""

    WAITING = "waiting"
    PROCESSED = "processed"
    FAILED = "failed"


def file_outcome(file: Mapping[str, object], surface: Surface) -> FileOutcome:
    """The one rule for "is this file done?", used by the hook's wait, the sensor, the trigger and the
    operators: a terminal status is done, ``error`` and ``deleted`` are failures; a surface that may omit
    the status (Foundry's FileInfo) counts a file without one as ready."""
    status = FileStatus.of(file, status_optional=surface.status_optional)
    if not status.is_terminal:
        return FileOutcome.WAITING
    return FileOutcome.FAILED if status.is_failure else FileOutcome.PROCESSED


class UploadStatus(str, enum.Enum):
    """The ``UploadStatus`` of a multipart upload (spec: ``#/definitions/UploadStatus``)."""

    PENDING = "pending"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def is_terminal(self) -> bool:
        return self is not UploadStatus.PENDING

    @property
    def is_failure(self) -> bool:
        return self in (UploadStatus.CANCELLED, UploadStatus.EXPIRED)


class ObjectKind(str, enum.Enum):
    """The ``object`` field of what an operation promises to answer."""

    FILE = "file"
    LIST = "list"
    UPLOAD = "upload"
    PART = "upload.part"
    DELETION = "file.deleted"  # {"object": "file", "deleted": true, "id": ...}: a File's deletion status


def check_object(
    payload: Any, expect: ObjectKind, expect_id: str | None = None, expect_parent: str | None = None
) -> str | None:
    """Why ``payload`` is not the ``expect`` object (with id ``expect_id``); ``None`` when it is.

    ``expect_parent`` is the upload a part must belong to.

    A File where a list was expected, a list where a File was expected, or another object's id are all
    answers to some other request, never a success of this one.
    """
    if not isinstance(payload, dict):
        return f"expected a JSON object, got {type(payload).__name__}"
    wanted = "file" if expect is ObjectKind.DELETION else expect.value
    kind = payload.get("object")
    if kind != wanted:
        return f"expected an object of kind {wanted!r}, got {str(kind)[:40]!r}"
    if expect is ObjectKind.LIST:
        if not isinstance(payload.get("data"), list) or not all(isinstance(i, dict) for i in payload["data"]):
            return "the list has no 'data' array of objects"
        return None
    if not is_usable_id(payload.get("id")):
        return f"the object has no usable id ({str(payload.get('id'))[:40]!r})"
    if expect_id is not None and payload["id"] != expect_id:
        return f"asked for {expect_id!r} but the answer is {payload['id'][:80]!r}"
    if expect is ObjectKind.DELETION and not isinstance(payload.get("deleted"), bool):
        return "the deletion status has no boolean 'deleted'"
    if (
        expect is ObjectKind.PART
        and expect_parent is not None
        and payload.get("upload_id") not in (None, expect_parent)
    ):
        return f"the part belongs to upload {str(payload.get('upload_id'))[:80]!r}, not {expect_parent!r}"
    completed = expect is ObjectKind.UPLOAD and payload.get("status") == UploadStatus.COMPLETED.value
    nested = payload.get("file")
    if completed and not (isinstance(nested, dict) and is_usable_id(nested.get("id"))):
        return "a completed upload without its file"
    return None


# Control characters (Unicode category Cc), lone surrogates (Cs) and the line/paragraph separators: never in
# an id, a filename or a URL we send. One compiled pattern: ids are checked on every status poll.
CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029]")


def has_space_or_control(text: str) -> bool:
    """True when ``text`` holds whitespace or a control character (endpoints, URLs, connection fields)."""
    return CONTROL_CHARACTERS.search(text) is not None or any(ch.isspace() for ch in text)


# The longest id we send or accept.
MAX_ID_CHARS = 256
# The characters of every id the service mints (file-<hex>, file-<uuid>, assistant-<base62>,
# assistant-upload_<base62>, ...: tests/specs/recordings): letters, digits, '-', '_', '.', ':'. Anything
# else (a '/', '?', '#', '%', '\', whitespace, a control character) would make a gateway that decodes the
# path before routing (API Management in front of the service) address another object.
NOT_AN_ID_CHARACTER = re.compile(r"[^A-Za-z0-9_.:-]")


def is_usable_id(value: object) -> bool:
    """An id we can address, in a request or from an answer: 1 to MAX_ID_CHARS characters of the ids the
    service mints, not ``.`` or ``..``."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_ID_CHARS
        and value not in (".", "..")
        and NOT_AN_ID_CHARACTER.search(value) is None
    )


class Surface(str, enum.Enum):
    """The HTTP surfaces of the service: two doors to a resource's files, two to a Foundry project's."""

    DATA_PLANE = "data_plane"  # {endpoint}/openai/...?api-version=2024-10-21
    V1 = "v1"  # {endpoint}/openai/v1/...
    FOUNDRY = "foundry"  # {project endpoint}/files?api-version=v1 (the agents route)
    # {project endpoint}/openai/files?api-version=2025-11-15-preview: the OpenAI files API of a project, as
    # azure-ai-projects 2.x calls it through its OpenAI client (recorded: tests/specs/recordings).
    FOUNDRY_OPENAI = "foundry_openai"

    @property
    def is_foundry(self) -> bool:
        """A Foundry project's route: Entra ID tokens only (the spec's only security scheme is OAuth2)."""
        return self in (Surface.FOUNDRY, Surface.FOUNDRY_OPENAI)

    @property
    def supports_import(self) -> bool:
        return self is Surface.DATA_PLANE

    @property
    def supports_uploads(self) -> bool:
        """The Uploads API: a resource's; no recording or page shows it on a Foundry project's routes."""
        return not self.is_foundry

    @property
    def status_optional(self) -> bool:
        """Files of this surface may come without a status (the spec gives it for Azure OpenAI only)."""
        return self is Surface.FOUNDRY

    @property
    def token_audience(self) -> str:
        """The audience an Entra ID token must carry (spec ``securityDefinitions``)."""
        return "https://ai.azure.com" if self.is_foundry else "https://cognitiveservices.azure.com"

    @property
    def default_scope(self) -> str:
        return f"{self.token_audience}/.default"


# Purposes accepted by each create operation, as listed in the specs.
DATA_PLANE_PURPOSES = (
    "fine-tune",
    "fine-tune-results",
    "assistants",
    "assistants_output",
    "batch",
    "batch_output",
)
# POST /openai/files lists one purpose fewer than the Purpose enum (spec: Files_Upload formData enum).
DATA_PLANE_UPLOAD_FILE_PURPOSES = (
    "fine-tune",
    "fine-tune-results",
    "assistants",
    "assistants_output",
    "batch",
)
V1_PURPOSES = ("assistants", "batch", "fine-tune", "evals")
# The OpenAI files API's purposes (OpenAI's FilePurpose); a project's OpenAI route answers for assistants
# and fine-tune files in the recordings.
FOUNDRY_OPENAI_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
FOUNDRY_PURPOSES = (
    "fine-tune",
    "fine-tune-results",
    "assistants",
    "assistants_output",
    "batch",
    "batch_output",
    "vision",
)

# Every purpose a file can have on any surface (list filters are checked against it).
ALL_PURPOSES = tuple(
    dict.fromkeys((*DATA_PLANE_PURPOSES, *V1_PURPOSES, *FOUNDRY_PURPOSES, *FOUNDRY_OPENAI_PURPOSES))
)

# Purposes whose content the service validates as JSON Lines.
JSONL_PURPOSES = frozenset({"fine-tune", "batch"})

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

# Service limits (spec summaries of UploadFile_Start / UploadFile_Part and the reference pages):
# an Upload holds at most 9 GB; a plain POST /files upload at most 512 MB; "each Part can be up to the
# standard size limit for file upload", i.e. the same 512 MB. We read "GB"/"MB" as binary units.
MAX_UPLOAD_BYTES = 9 * GiB
MAX_FILE_BYTES = 512 * MiB
MAX_PART_BYTES = MAX_FILE_BYTES
# Our own floor, not the service's: smaller parts only multiply requests.
MIN_PART_BYTES = 1 * MiB
DEFAULT_PART_BYTES = 64 * MiB
DEFAULT_MAX_CONCURRENCY = 4
MAX_CONCURRENCY = 32
# Parts land as Azure Storage blocks (UploadPartResource.azure_block_id); a block blob holds at most
# 50,000 blocks, so more parts than that cannot be committed.
MAX_PARTS = 50_000
# An Upload expires one hour after its creation: expires_at = created_at + 3600 in both recorded creates
# (tests/specs/recordings/aoai_upload_create_cancel_{async,sync}_2024-08-01-preview.json).
UPLOAD_EXPIRY_SECONDS = 60 * 60

# A file's expires_after (seconds after its creation): 1 hour to 30 days, "Must be between 3600 (1 hour) and
# 2592000 (30 days)" (https://learn.microsoft.com/azure/foundry/reference/rest/files-create-file); batch input
# files 14 to 30 days, "You can set to a number between 1209600-2592000" (learn.microsoft.com, how-to/batch).
# With one, a resource holds 10,000 batch input files instead of 500.
EXPIRY_RANGE = (3_600, 2_592_000)
EXPIRY_RANGES = {"batch": (1_209_600, 2_592_000)}


# The first data plane api-version whose file and upload creates take expires_after: the GA 2024-10-21 has
# none (its upload reference lists no expiry; Azure/azure-sdk-for-java#47401), Azure's batch how-to sends it
# with 2025-03-01-preview; the v1 API takes it.
EXPIRY_API_VERSION = "2025-03-01"


def offers_expiry(surface: Surface, api_version: str | None) -> bool:
    """Whether file and upload creates of ``surface`` at ``api_version`` take ``expires_after`` (Foundry's
    agent files have no expiry; its OpenAI route is OpenAI's files API, which does)."""
    if surface in (Surface.V1, Surface.FOUNDRY_OPENAI):
        return True
    return surface is Surface.DATA_PLANE and (api_version or "")[:10] >= EXPIRY_API_VERSION


def expiry_range(purpose: str) -> tuple[int, int]:
    """The seconds ``expires_after`` may take for a file of ``purpose`` (inclusive bounds)."""
    return EXPIRY_RANGES.get(purpose, EXPIRY_RANGE)


def purposes_for(surface: Surface, operation: str) -> tuple[str, ...]:
    """Purposes a create ``operation`` (``upload_file``, ``import_file``, ``create_upload``) accepts."""
    if surface is Surface.FOUNDRY:
        return FOUNDRY_PURPOSES
    if surface is Surface.FOUNDRY_OPENAI:
        return FOUNDRY_OPENAI_PURPOSES
    if surface is Surface.V1:
        return V1_PURPOSES
    if operation == "upload_file":
        return DATA_PLANE_UPLOAD_FILE_PURPOSES
    return DATA_PLANE_PURPOSES


class File(TypedDict, total=False):
    """A File (data plane, v1) or FileInfo (Foundry) as the service returns it."""

    object: str
    id: str
    bytes: int | None
    created_at: int
    filename: str
    purpose: str
    status: str
    status_details: str
    expires_at: int


class Upload(TypedDict, total=False):
    """An UploadResource; ``file`` is set once the upload is completed."""

    object: str
    id: str
    bytes: int
    created_at: int
    expires_at: int
    filename: str
    purpose: str
    status: str
    file: File


class UploadPart(TypedDict, total=False):
    """An UploadPartResource."""

    object: str
    id: str
    upload_id: str
    azure_block_id: str
    created_at: int
