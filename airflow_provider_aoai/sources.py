"""Sources: what an upload (or a dataset check) reads, and how a change to it is told.

A *source* is a local path, a ``file://`` / fsspec URL, an Airflow ``ObjectStoragePath``, or a seekable binary
file object. Its :class:`Fingerprint` (size plus modification time, or the object store's etag/version) is
taken when it is opened and checked again before an upload is completed: a source that changed fails the
upload with :class:`AzureOpenAISourceChangedError`; one that grew or shrank is caught while it is read, too.
Nothing here speaks HTTP.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast
from urllib.parse import urlsplit

from airflow_provider_aoai.exceptions import AzureOpenAIInvalidArgumentError, AzureOpenAISourceChangedError
from airflow_provider_aoai.models import MiB
from airflow_provider_aoai.redaction import redact, redact_url

READ_CHUNK = 1 * MiB


@dataclass(frozen=True)
class Fingerprint:
    """What identifies a source's content without reading it: its size and a change marker.

    ``marker`` is ``mtime_ns:inode`` for local files, the etag / version id / generation / modification time
    an object store reports, or ``None`` when the source offers nothing but its size.
    """

    size: int
    marker: str | None

    def to_json(self) -> dict[str, Any]:
        return {"size": self.size, "marker": self.marker}

    @classmethod
    def from_json(cls, data: Any) -> Fingerprint:
        if not isinstance(data, dict) or not isinstance(data.get("size"), int):
            raise ValueError("not a fingerprint")
        marker = data.get("marker")
        return cls(data["size"], str(marker) if marker is not None else None)

    def describe_change(self, now: Fingerprint) -> str:
        if now.size != self.size:
            return f"its size went from {self.size} to {now.size} bytes"
        return "it was modified (modification time, etag or version changed)"


# Keys under which fsspec implementations report a content version, most specific first.
_REMOTE_MARKER_KEYS = (
    "VersionId",
    "version_id",
    "generation",
    "ETag",
    "etag",
    "md5Hash",
    "content_md5",
    "mtime",
    "LastModified",
    "last_modified",
    "updated",
    "created",
)


@dataclass
class Source:
    """An opened-for-reading description of what to upload.

    :param local_path: set for local files: parts can then be read in parallel from their offsets.
    :param current: returns the source's fingerprint now (to compare with :attr:`fingerprint`).
    """

    name: str
    size: int
    opener: Callable[[], IO[bytes]]
    description: str
    fingerprint: Fingerprint
    current: Callable[[], Fingerprint]
    local_path: Path | None = None

    def open(self) -> IO[bytes]:
        return self.opener()

    def check_unchanged(self) -> None:
        """:raises AzureOpenAISourceChangedError: the fingerprint differs from the one taken at open."""
        try:
            now = self.current()
        except (OSError, ValueError) as exc:
            raise AzureOpenAISourceChangedError(
                f"source changed during upload: {self.description} can no longer be read "
                f"({type(exc).__name__})"
            ) from None
        if now != self.fingerprint:
            raise AzureOpenAISourceChangedError(
                f"source changed during upload: {self.description}: {self.fingerprint.describe_change(now)}"
            )

    def read_range(self, offset: int, size: int) -> Iterator[bytes | memoryview]:
        """Yield exactly ``size`` bytes from ``offset`` in chunks, from a fresh reader.

        For a local file the chunks are views of one buffer that the next chunk overwrites: a consumer hands
        each on (to a socket) before it asks for the next. Reusing the buffer spares a fresh 1 MiB
        allocation, and its page faults, per chunk. When the range ends the source, the source must end
        there too.

        :raises AzureOpenAISourceChangedError: the source is shorter (or, for the last range, longer).
        """
        try:
            yield from self._read_range(offset, size)
        except (OSError, ValueError) as exc:  # deleted, unmounted, closed, permissions changed, ...
            raise AzureOpenAISourceChangedError(
                f"source changed during upload: {self.description} can no longer be read "
                f"({type(exc).__name__}: {redact(exc, limit=200)})"
            ) from None

    def _read_range(self, offset: int, size: int) -> Iterator[bytes | memoryview]:
        with self.open() as stream:
            if offset:
                stream.seek(offset)
            # Local files only: other streams (a caller's file object, fsspec files) may not implement it.
            readinto: Callable[[memoryview], int | None] | None = (
                getattr(stream, "readinto", None) if self.local_path is not None else None
            )
            view = memoryview(bytearray(min(READ_CHUNK, size))) if readinto is not None else None
            remaining = size
            while remaining > 0:
                wanted = min(READ_CHUNK, remaining)
                if readinto is not None and view is not None:
                    count = readinto(view[:wanted]) or 0
                    chunk: bytes | memoryview = view[:count]
                else:
                    chunk = stream.read(wanted)
                    count = len(chunk)
                if not count:
                    raise AzureOpenAISourceChangedError(
                        f"source changed during upload: {self.description} ended {remaining} bytes early "
                        f"(at byte {offset + size - remaining} of {self.size})"
                    )
                remaining -= count
                yield chunk
            if offset + size >= self.size and stream.read(1):
                raise AzureOpenAISourceChangedError(
                    f"source changed during upload: {self.description} grew beyond {self.size} bytes"
                )


class _Borrowed(io.RawIOBase):
    """Reads a caller's file object relative to a fixed start offset, without closing it."""

    def __init__(self, stream: IO[bytes], start: int) -> None:
        self._stream = stream
        self._start = start
        stream.seek(start)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET:
            return self._stream.seek(self._start + offset) - self._start
        return self._stream.seek(offset, whence) - self._start

    def read(self, size: int = -1) -> bytes:
        return self._stream.read(size)

    def close(self) -> None:  # the caller owns the stream
        pass


def _local_fingerprint(path: Path) -> Fingerprint:
    # ctime too: a rewrite that puts the mtime back (cp -p, touch -r, rsync -t) still changes the ctime.
    stat = path.stat()
    return Fingerprint(stat.st_size, f"{stat.st_mtime_ns}:{stat.st_ctime_ns}:{stat.st_ino}")


def _remote_fingerprint(info: dict[str, Any]) -> Fingerprint:
    marker = next((str(info[key]) for key in _REMOTE_MARKER_KEYS if info.get(key) not in (None, "")), None)
    return Fingerprint(int(info["size"]), marker)


def _local_source(path: Path, argument: str, shown: str) -> Source:
    if not path.exists():
        raise AzureOpenAIInvalidArgumentError(argument, f"{shown} does not exist")
    if not path.is_file():
        raise AzureOpenAIInvalidArgumentError(argument, f"{shown} is not a regular file")
    if not os.access(path, os.R_OK):
        raise AzureOpenAIInvalidArgumentError(argument, f"{shown} is not readable")
    fingerprint = _local_fingerprint(path)
    return Source(
        name=path.name,
        size=fingerprint.size,
        opener=lambda: path.open("rb"),
        description=shown,
        fingerprint=fingerprint,
        current=lambda: _local_fingerprint(path),
        local_path=path,
    )


def _file_object_source(source: Any, argument: str) -> Source:
    try:
        seekable = bool(source.seekable())
    except (AttributeError, ValueError, OSError):
        seekable = False
    if not seekable:
        raise AzureOpenAIInvalidArgumentError(
            argument, "a file object must be open and seekable (its size is needed)"
        )
    try:
        probe = source.read(0)  # text streams answer "" (io.StringIO, TextIOWrapper have no "b" mode)
        start = source.tell()
    except (OSError, ValueError) as exc:
        raise AzureOpenAIInvalidArgumentError(argument, f"the file object cannot be read ({exc})") from None
    if not isinstance(probe, (bytes, bytearray)):
        raise AzureOpenAIInvalidArgumentError(argument, "a file object must be opened in binary mode ('rb')")

    def current() -> Fingerprint:
        size = source.seek(0, os.SEEK_END) - start
        source.seek(start)
        try:
            mtime = os.fstat(source.fileno()).st_mtime_ns
        except (AttributeError, OSError, io.UnsupportedOperation):
            mtime = None
        return Fingerprint(size, str(mtime) if mtime is not None else None)

    fingerprint = current()
    name = os.path.basename(str(getattr(source, "name", "") or "")) or "upload.bin"
    return Source(
        name=name,
        size=fingerprint.size,
        opener=lambda: cast(IO[bytes], _Borrowed(source, start)),
        description=f"file object {name}",
        fingerprint=fingerprint,
        current=current,
    )


def open_source(source: Any, argument: str = "source") -> Source:
    """Describe ``source`` and check that it exists and is readable; no request is sent.

    :raises AzureOpenAIInvalidArgumentError: missing file, a directory, an unreadable or non-seekable source.
    """
    if source is None or isinstance(source, (bytes, bytearray, memoryview)):
        raise AzureOpenAIInvalidArgumentError(
            argument, "must be a path, a file:// or fsspec URL, an ObjectStoragePath or a binary file object"
        )
    source = with_connection(source, argument)
    fs_of_path = object_path_fs(source, argument)
    if fs_of_path is None and hasattr(source, "read"):
        return _file_object_source(source, argument)

    is_object_path = fs_of_path is not None
    if not is_object_path and not isinstance(source, (str, os.PathLike)):
        raise AzureOpenAIInvalidArgumentError(argument, f"unsupported source type {type(source).__name__}")
    if not is_object_path:
        text = os.fspath(source)
        if not isinstance(text, str) or not text.strip():
            raise AzureOpenAIInvalidArgumentError(argument, "must not be empty")
        if "\x00" in text:
            raise AzureOpenAIInvalidArgumentError(argument, "must not contain NUL characters")
        text = text.removeprefix("file://")
        if "://" not in text:
            try:
                path = Path(text).expanduser()
                return _local_source(path, argument, str(path))
            except (OSError, RuntimeError) as exc:  # ~unknown-user, a name too long for the file system
                raise AzureOpenAIInvalidArgumentError(
                    argument, f"{redact(text, limit=200)} cannot be used: {type(exc).__name__}: {exc}"
                ) from None

    # fsspec URLs and ObjectStoragePath (a universal_pathlib path with .fs and .path).
    shown = redact_url(str(source)) if not is_object_path else redact(str(source), limit=300)
    if is_object_path:
        fs, fs_path = fs_of_path, source.path
    else:
        import fsspec

        try:
            fs, fs_path = fsspec.core.url_to_fs(str(source))
        except Exception as exc:
            raise AzureOpenAIInvalidArgumentError(
                argument, f"cannot open {shown}: {type(exc).__name__}: {redact(exc, limit=300)}"
            ) from None
    protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    if any(p in ("file", "local") for p in protocols):
        try:
            return _local_source(Path(fs_path), argument, shown)
        except OSError as exc:
            raise AzureOpenAIInvalidArgumentError(argument, f"{shown} cannot be used: {exc}") from None

    def info() -> dict[str, Any]:
        if hasattr(fs, "invalidate_cache"):
            fs.invalidate_cache(fs_path)
        return fs.info(fs_path)

    try:
        details = info()
    except FileNotFoundError:
        raise AzureOpenAIInvalidArgumentError(argument, f"{shown} does not exist") from None
    except Exception as exc:
        raise AzureOpenAIInvalidArgumentError(
            argument, f"cannot open {shown}: {type(exc).__name__}: {redact(exc, limit=300)}"
        ) from None
    if details.get("type") != "file":
        raise AzureOpenAIInvalidArgumentError(argument, f"{shown} is not a file")
    name = fs_path.rstrip("/").rsplit("/", 1)[-1]
    fingerprint = _remote_fingerprint(details)
    return Source(
        name=name,
        size=fingerprint.size,
        opener=lambda: fs.open(fs_path, "rb"),
        description=shown,
        fingerprint=fingerprint,
        current=lambda: _remote_fingerprint(info()),
    )


def with_connection(value: Any, argument: str) -> Any:
    """An ``ObjectStoragePath`` for the text of one that names its connection (``s3://aws_conn@bucket/key``,
    as ``str()`` of such a path reads, e.g. in an XCom), so that it opens with that connection; any other
    value as it is.

    :raises AzureOpenAIInvalidArgumentError: it names a connection, but cannot be made a path.
    """
    if not isinstance(value, str) or "://" not in value or value.startswith("file://"):
        return value
    try:
        parts = urlsplit(value)
        named = parts.username and parts.password is None
    except ValueError:
        return value  # fsspec tells what is wrong with it
    if not named:
        return value
    try:
        from airflow.providers.common.compat.sdk import ObjectStoragePath

        return ObjectStoragePath(value)
    except Exception as exc:
        shown, why = redact_url(value), redact(exc, limit=200)
        raise AzureOpenAIInvalidArgumentError(
            argument, f"{shown} cannot be opened: {type(exc).__name__}: {why}"
        ) from None


def object_path_fs(value: Any, argument: str) -> Any:
    """The fsspec filesystem of an ``ObjectStoragePath``-like value (``.fs`` and ``.path``), or ``None`` for
    anything else (a path, a URL, a file object).

    :raises AzureOpenAIInvalidArgumentError: it is one, but its filesystem cannot be had (a scheme with no
        filesystem registered in Airflow, missing credentials, ...).
    """
    if isinstance(value, (str, bytes, os.PathLike)) and not hasattr(type(value), "fs"):
        return None
    try:
        fs = getattr(value, "fs", None)
    except Exception as exc:
        shown, why = redact(str(value), limit=200), redact(exc, limit=200)
        raise AzureOpenAIInvalidArgumentError(
            argument, f"{shown} cannot be opened: {type(exc).__name__}: {why}"
        ) from None
    return fs if fs is not None and hasattr(value, "path") else None


def md5_of(source: Source) -> str:
    """The md5 (hex) of a source's content, read once from the start (to recognise a file of ours)."""
    digest = hashlib.md5(usedforsecurity=False)
    for chunk in source.read_range(0, source.size):
        digest.update(chunk)
    return digest.hexdigest()


def verify_content(source: Source, md5: str) -> None:
    """Read ``source`` again: its content must still have ``md5`` (the md5 of what was sent).

    For sources that offer nothing but their size to tell a change by (in-memory file objects).

    :raises AzureOpenAISourceChangedError: the content differs (or can no longer be read).
    """
    if md5_of(source) != md5:
        raise AzureOpenAISourceChangedError(
            f"source changed during upload: {source.description} no longer holds the bytes that were sent"
        )
