"""The exact bytes (README "The exact bytes", issue 7 section 2) under attack: sources that change while they
are uploaded. Each test compares what the emulator stored with the source as it was when the upload started.

Promise: "A source that grows, shrinks or is rewritten fails the task with AzureOpenAISourceChangedError
... and the upload is cancelled ... Never a truncated or mixed file."
"""

from __future__ import annotations

import io
import os
import threading
import time
from pathlib import Path

import pytest

from airflow_provider_aoai.exceptions import AzureOpenAIError, AzureOpenAISourceChangedError
from tests.adversarial.helpers import content, md5

MiB = 1024 * 1024


def wait_for(condition, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout}s")
        time.sleep(0.005)


def new_files(emulator, before: set[str]) -> list[str]:
    return [f["id"] for f in emulator.store.list_files() if f["id"] not in before]


def read_position(path: Path) -> int:
    """How far this process has read ``path`` (the largest offset of any fd open on it), from /proc."""
    best = -1
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") != str(path):
                continue
            with open(f"/proc/self/fdinfo/{fd}") as info:
                best = max(best, int(info.readline().split()[1]))
        except OSError:
            continue
    return best


def parts_accepted(emulator) -> int:
    return sum(1 for r in emulator.faults.calls("uploads.parts") if r.status == 200)


class RewrittenWhileRead(io.BytesIO):
    """A seekable binary file object (think: a shared buffer, an mmap) whose later bytes are rewritten, same
    size, once the reader has passed ``after`` bytes. No timing involved: it happens on the read itself."""

    def __init__(self, data: bytes, after: int) -> None:
        super().__init__(data)
        self.after = after
        self.rewritten = False

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        if not self.rewritten and self.tell() >= self.after:
            self.rewritten = True
            position = self.tell()
            length = len(self.getbuffer())
            self.seek(0)
            super().write(b"Z" * length)
            self.seek(position)
        return chunk

    def readinto(self, buffer) -> int:  # the md5 pass of local files uses readinto; keep both paths honest
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


@pytest.mark.parametrize("method", ["upload_file", "upload_multipart"])
def test_a_file_object_rewritten_during_the_upload_never_lands_mixed(hook, emulator, method):
    """FINDING: a BytesIO (no fileno, so no mtime; only its size is fingerprinted) rewritten in place, same
    size, mid-read: the service stores the first bytes of the old content and the rest of the new one,
    and the call succeeds."""
    original = os.urandom(3 * MiB)
    source = RewrittenWhileRead(original, after=MiB + 1)
    before = {f["id"] for f in emulator.store.list_files()}
    try:
        if method == "upload_file":
            hook.upload_file(source=source, purpose="assistants", filename="adv-mixed.bin")
        else:
            hook.upload_multipart(
                source=source,
                purpose="assistants",
                filename="adv-mixed.bin",
                part_size=MiB,
                max_concurrency=1,
            )
    except AzureOpenAISourceChangedError:
        pass  # the promise
    assert source.rewritten
    stored = [content(emulator, f) for f in new_files(emulator, before)]
    mixed = [s for s in stored if s != original and s != b"Z" * len(original)]
    assert not mixed, f"a mixed file landed: {len(mixed[0])} bytes, md5 {md5(mixed[0])}"


def _rewrite_keeping_mtime(path: Path) -> None:
    st = path.stat()
    with path.open("r+b") as out:
        out.write(os.urandom(st.st_size))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # as `cp -p`, `touch -r`, tar -x, rsync -t do


def test_a_local_file_rewritten_with_its_mtime_kept_never_lands_mixed(hook, emulator, tmp_path):
    """FINDING: upload_file fingerprints size + mtime + inode only and sends no md5; a same-size rewrite
    whose mtime is put back (or lands within the same coarse timestamp tick) goes unnoticed and a mixed
    file is stored. (upload_multipart is saved by its md5 pass: see the held test below.)"""
    path = tmp_path / "adv-keep-mtime.bin"
    original = os.urandom(7 * MiB)
    path.write_bytes(original)
    before = {f["id"] for f in emulator.store.list_files()}
    emulator.faults.set_link(bandwidth_bytes_per_second=2 * MiB)
    done = threading.Event()

    def mutate() -> None:
        wait_for(lambda: read_position(path) >= 2 * MiB or done.is_set(), what="the reader past 2 MiB")
        if not done.is_set():
            _rewrite_keeping_mtime(path)

    mutator = threading.Thread(target=mutate)
    mutator.start()
    try:
        hook.upload_file(source=str(path), purpose="assistants")
    except AzureOpenAISourceChangedError:
        pass
    finally:
        done.set()
        mutator.join()
        emulator.faults.set_link(None)
    stored = [content(emulator, f) for f in new_files(emulator, before)]
    assert all(s in (original, path.read_bytes()) for s in stored), "a mixed file landed"


# ------------------------------------------------------------------------------------------ what held
def _grow(path: Path) -> None:
    with path.open("ab") as out:
        out.write(b"x" * 100)


def _shrink(path: Path) -> None:
    os.truncate(path, path.stat().st_size - 100)


def _rewrite(path: Path) -> None:
    with path.open("r+b") as out:
        out.write(os.urandom(path.stat().st_size))


def _symlink(path: Path) -> None:
    other = path.with_suffix(".other")
    other.write_bytes(os.urandom(path.stat().st_size))
    link = path.with_suffix(".link")
    os.symlink(other, link)
    os.replace(link, path)


def _replace(path: Path) -> None:
    other = path.with_suffix(".new")
    other.write_bytes(os.urandom(path.stat().st_size))
    os.replace(other, path)


def _delete(path: Path) -> None:
    path.unlink()


MUTATIONS = {
    "grow": _grow,
    "shrink": _shrink,
    "rewrite": _rewrite,
    "rewrite_keep_mtime": _rewrite_keeping_mtime,
    "symlink": _symlink,
    "replace": _replace,
    "delete": _delete,
}


def _run_mutated(hook, emulator, tmp_path, method, mutation, size):
    path = tmp_path / f"adv-{mutation}.bin"
    original = os.urandom(size)
    path.write_bytes(original)
    before = {f["id"] for f in emulator.store.list_files()}
    uploads_before = {u["id"] for u in emulator.store.list_uploads()}
    emulator.faults.set_link(bandwidth_bytes_per_second=2 * MiB)
    done = threading.Event()

    calls_before = parts_accepted(emulator)

    def started() -> bool:  # upload_file: the reader is past 2 MiB; multipart: a part was accepted
        if method == "upload_file":
            return read_position(path) >= 2 * MiB
        return parts_accepted(emulator) > calls_before

    def mutate() -> None:
        wait_for(lambda: done.is_set() or started(), what="progress")
        if not done.is_set():
            MUTATIONS[mutation](path)

    mutator = threading.Thread(target=mutate)
    mutator.start()
    error: BaseException | None = None
    try:
        if method == "upload_file":
            hook.upload_file(source=str(path), purpose="assistants")
        else:
            hook.upload_multipart(source=str(path), purpose="assistants", part_size=MiB, max_concurrency=1)
    except BaseException as exc:
        error = exc
    finally:
        done.set()
        mutator.join()
        emulator.faults.set_link(None)
    stored = [content(emulator, f) for f in new_files(emulator, before)]
    uploads = [u for u in emulator.store.list_uploads() if u["id"] not in uploads_before]
    return original, stored, uploads, error


@pytest.mark.parametrize("mutation", ["grow", "shrink", "rewrite", "symlink", "replace", "delete"])
@pytest.mark.parametrize("method", ["upload_file", "upload_multipart"])
def test_held_a_changed_local_source_fails_and_stores_nothing(hook, emulator, tmp_path, method, mutation):
    size = 7 * MiB if method == "upload_file" else 4 * MiB
    _original, stored, uploads, error = _run_mutated(hook, emulator, tmp_path, method, mutation, size)
    assert stored == [], "a file landed although the source changed"
    assert all(u["status"] == "cancelled" for u in uploads)
    if mutation == "delete" and method == "upload_multipart":
        pytest.skip("see test_a_source_deleted_mid_multipart_is_reported_as_such")
    assert isinstance(error, AzureOpenAISourceChangedError), repr(error)


def test_held_multipart_rewrite_keeping_mtime_is_caught(hook, emulator, tmp_path):
    _original, stored, uploads, error = _run_mutated(
        hook, emulator, tmp_path, "upload_multipart", "rewrite_keep_mtime", 4 * MiB
    )
    assert stored == [] and all(u["status"] == "cancelled" for u in uploads)
    # caught by the fingerprint's ctime now (before, by the service's md5 check): never completed
    assert isinstance(error, AzureOpenAIError)


def test_a_source_deleted_mid_multipart_is_reported_as_such(hook, emulator, tmp_path):
    """FINDING: a local source deleted while its parts are sent surfaces as "the connection was closed
    before an answer arrived" (an AzureOpenAIConnectionError, after a pointless retry) -- the real cause is
    lost, and because connection trouble counts as resumable, an operator with retries left *keeps* the
    upload instead of cancelling it ("a changed source" must cancel)."""
    _original, stored, _uploads, error = _run_mutated(
        hook, emulator, tmp_path, "upload_multipart", "delete", 4 * MiB
    )
    assert stored == []
    assert isinstance(error, AzureOpenAISourceChangedError), f"{type(error).__name__}: {error}"


def test_a_source_deleted_mid_multipart_is_not_kept_for_a_retry(hook, emulator, tmp_path):
    """FINDING (consequence): with keep_on_failure=True (what the operator passes while retries are left)
    the upload of a deleted source stays pending."""
    path = tmp_path / "adv-deleted-kept.bin"
    path.write_bytes(os.urandom(4 * MiB))
    uploads_before = {u["id"] for u in emulator.store.list_uploads()}
    emulator.faults.set_link(bandwidth_bytes_per_second=2 * MiB)
    accepted = parts_accepted(emulator)
    done = threading.Event()

    def mutate() -> None:
        wait_for(lambda: done.is_set() or parts_accepted(emulator) > accepted, what="a part")
        if not done.is_set():
            path.unlink()

    mutator = threading.Thread(target=mutate)
    mutator.start()
    try:
        with pytest.raises(AzureOpenAIError):
            hook.upload_multipart(
                source=str(path), purpose="assistants", part_size=MiB, max_concurrency=1, keep_on_failure=True
            )
    finally:
        done.set()
        mutator.join()
        emulator.faults.set_link(None)
    uploads = [u for u in emulator.store.list_uploads() if u["id"] not in uploads_before]
    assert [u["status"] for u in uploads] == ["cancelled"]


def test_a_source_gone_before_the_body_is_read_is_not_a_connection_error(hook, emulator, tmp_path):
    """FINDING: upload_file checks the source, then opens it again lazily inside the request body. If it is
    gone by then (here: deleted while the client waits out a 429's Retry-After; in life: any moment
    between the check and the body), the FileNotFoundError is raised inside urllib3's send loop, which
    wraps it as "Connection aborted": the caller gets AzureOpenAIConnectionError "... not retried because
    the service may have acted on it". The real cause is lost and the message is wrong (issue 7, section 2:
    "surfaces as a connection error that says 'the service may have acted on it'")."""
    path = tmp_path / "adv-gone.jsonl"
    path.write_bytes(b'{"a": 1}\n' * 1000)
    throttled = len(emulator.faults.calls("files.create"))
    emulator.faults.inject("files.create", status=429, retry_after=1)

    def delete_on_429() -> None:
        wait_for(lambda: len(emulator.faults.calls("files.create")) > throttled, what="the 429")
        path.unlink()

    deleter = threading.Thread(target=delete_on_429)
    deleter.start()
    try:
        with pytest.raises(AzureOpenAIError) as caught:
            hook.upload_file(source=str(path), purpose="assistants")
    finally:
        deleter.join()
    assert isinstance(caught.value, AzureOpenAISourceChangedError), (
        f"{type(caught.value).__name__}: {caught.value}"
    )


@pytest.mark.parametrize("method", ["upload_file", "upload_multipart"])
def test_a_file_object_closed_during_the_upload_gives_a_typed_error(hook, emulator, tmp_path, method):
    """FINDING: the caller closes its file object mid-upload: a raw ValueError ("read of closed file")."""
    path = tmp_path / "adv-closed.bin"
    path.write_bytes(os.urandom(3 * MiB))

    class ClosedWhileRead(io.FileIO):
        def read(self, size=-1):
            chunk = super().read(size)
            if self.tell() > MiB:
                self.close()
            return chunk

        def readinto(self, buffer):  # what io.BufferedReader calls
            count = super().readinto(buffer)
            if self.tell() > MiB:
                self.close()
            return count

    source = io.BufferedReader(ClosedWhileRead(path, "r"))
    uploads_before = {u["id"] for u in emulator.store.list_uploads()}
    with pytest.raises(AzureOpenAIError):
        if method == "upload_file":
            hook.upload_file(source=source, purpose="assistants")
        else:
            hook.upload_multipart(source=source, purpose="assistants", part_size=MiB, max_concurrency=1)
    assert all(
        u["status"] == "cancelled" for u in emulator.store.list_uploads() if u["id"] not in uploads_before
    )
