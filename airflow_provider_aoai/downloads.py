"""Where a downloaded file goes: checked before any request, written aside, put in place only on success.

A local destination is written to a temporary file created exclusively (``O_EXCL``, never following a link)
with a random name in the destination's own directory, then renamed over the destination. On any failure
the temporary file is removed and nothing else is touched: no pre-existing ``<destination>.part``, no file a
planted link points to, no partial destination. An ``ObjectStoragePath`` destination is written to a
temporary sibling object and moved into place the same way; an error answer (404) writes nothing at all.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from airflow_provider_aoai.exceptions import AzureOpenAIDestinationError, AzureOpenAIInvalidArgumentError
from airflow_provider_aoai.redaction import redact
from airflow_provider_aoai.sources import object_path_fs


class LocalDestination:
    """A path on this machine."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._temp: Path | None = None
        self._out: IO[bytes] | None = None

    def open(self) -> IO[bytes]:
        fd, name = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".part")
        self._temp = Path(name)
        self._out = os.fdopen(fd, "wb")
        # mkstemp makes the file private (0600); the result gets the mode a new file would (or the old one's).
        try:
            mode = self.path.stat().st_mode & 0o7777 if self.path.is_file() else 0o666 & ~_umask()
            os.fchmod(fd, mode)
        except OSError:
            pass  # the download is still right; only its mode is the private default
        return self._out

    def commit(self) -> None:
        out = self._out if self._out is not None else self.open()  # an empty answer still makes a file
        out.close()
        if self._temp is not None:
            os.replace(self._temp, self.path)
            self._temp = None

    def discard(self) -> None:
        if self._out is not None:
            self._out.close()
        if self._temp is not None:
            self._temp.unlink(missing_ok=True)
            self._temp = None

    def __str__(self) -> str:
        return str(self.path)


class ObjectDestination:
    """An Airflow ``ObjectStoragePath`` (any fsspec filesystem but the local one)."""

    def __init__(self, path: Any) -> None:
        self.path = path
        self._temp: Any = None
        self._out: IO[bytes] | None = None

    def open(self) -> IO[bytes]:
        self._temp = self.path.parent / f".{self.path.name}.{secrets.token_hex(8)}.part"
        self._out = self._temp.open("wb")
        return self._out

    def commit(self) -> None:
        out = self._out if self._out is not None else self.open()
        out.close()
        if self._temp is not None:
            self._temp.fs.mv(self._temp.path, self.path.path)
            self._temp = None

    def discard(self) -> None:
        try:
            if self._out is not None:
                self._out.close()
        finally:
            if self._temp is not None and self._temp.fs.exists(self._temp.path):
                self._temp.fs.rm(self._temp.path)
            self._temp = None

    def __str__(self) -> str:
        return redact(str(self.path), limit=300)


def _umask() -> int:
    current = os.umask(0o022)
    os.umask(current)
    return current


def prepare_destination(
    destination: Any, argument: str = "destination"
) -> LocalDestination | ObjectDestination:
    """Check ``destination`` before any request: a file path (or ObjectStoragePath) in an existing directory.

    :raises AzureOpenAIInvalidArgumentError: naming ``destination``.
    """
    fs = object_path_fs(destination, argument)
    if fs is not None:
        protocols = fs.protocol
        protocols = protocols if isinstance(protocols, (tuple, list)) else (protocols,)
        if not any(p in ("file", "local") for p in protocols):
            if destination.fs.isdir(destination.path):
                raise AzureOpenAIInvalidArgumentError(argument, f"{redact(str(destination))} is a directory")
            return ObjectDestination(destination)
        destination = destination.path
    if destination is None or not isinstance(destination, (str, os.PathLike)):
        raise AzureOpenAIInvalidArgumentError(
            argument, f"must be a file path or an ObjectStoragePath, got {type(destination).__name__}"
        )
    text = os.fspath(destination)
    if not isinstance(text, str) or not text.strip():
        raise AzureOpenAIInvalidArgumentError(argument, "must not be empty")
    if "\x00" in text:
        raise AzureOpenAIInvalidArgumentError(argument, "must not contain NUL characters")
    try:
        path = Path(text).expanduser()
        if text.endswith(("/", os.sep)) or path.is_dir():
            raise AzureOpenAIInvalidArgumentError(argument, f"{path} is a directory; give a file path")
        parent = path.parent
        if not parent.is_dir():
            raise AzureOpenAIInvalidArgumentError(argument, f"the directory {parent} does not exist")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise AzureOpenAIInvalidArgumentError(argument, f"the directory {parent} is not writable")
        if len(path.name.encode()) > 200:  # the temporary name beside it adds a prefix and a suffix
            raise AzureOpenAIInvalidArgumentError(argument, "the file name is longer than 200 bytes")
    except (OSError, RuntimeError) as exc:  # ~unknown-user, a name too long for the file system, ...
        raise AzureOpenAIInvalidArgumentError(
            argument, f"cannot be used: {type(exc).__name__}: {exc}"
        ) from None
    return LocalDestination(path)


def write_download(
    target: LocalDestination | ObjectDestination, fetch: Callable[[Callable[[], IO[bytes]]], int]
) -> int:
    """Run ``fetch(open_out)`` and put the result in place; on any failure remove what was written."""
    try:
        size = fetch(target.open)
        target.commit()
    except OSError as exc:  # the download was fine; writing it was not
        target.discard()
        raise AzureOpenAIDestinationError(
            f"destination {target} could not be written: {type(exc).__name__}: {exc.strerror or exc}"
        ) from None
    except BaseException:
        target.discard()
        raise
    return size
