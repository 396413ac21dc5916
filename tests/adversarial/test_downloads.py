"""download_file (README "Your local files", issue 7 section 4) under attack: planted links, races, odd
destinations, concurrent downloads. Each test checks what is on disk afterwards, not only the return."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from airflow_provider_aoai.exceptions import AzureOpenAIError, AzureOpenAIInvalidArgumentError
from tests.adversarial.helpers import requests_served
from tests.conftest import API_KEY

MiB = 1024 * 1024


@pytest.fixture
def stored(hook, emulator, tmp_path):
    data = os.urandom(2 * MiB)
    file = hook.upload_file(
        source=__import__("io").BytesIO(data), purpose="assistants", filename="adv-dl.bin"
    )
    return file["id"], data


@pytest.fixture
def folder(tmp_path):
    path = tmp_path / "dl"
    path.mkdir()
    return path


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------------------------------ held
def test_held_a_destination_that_is_a_symlink_is_replaced_not_followed(hook, stored, folder, tmp_path):
    file_id, data = stored
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (folder / "out").symlink_to(victim)
    hook.download_file(file_id=file_id, destination=folder / "out")
    assert victim.read_bytes() == b"precious"
    assert not (folder / "out").is_symlink() and (folder / "out").read_bytes() == data


def test_held_a_hard_linked_destination_leaves_the_other_name_intact(hook, stored, folder, tmp_path):
    file_id, data = stored
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    os.link(victim, folder / "out")
    hook.download_file(file_id=file_id, destination=folder / "out")
    assert victim.read_bytes() == b"precious" and (folder / "out").read_bytes() == data


def test_held_planted_part_files_are_never_touched(hook, emulator, stored, folder, tmp_path):
    file_id, _ = stored
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (folder / "out.part").symlink_to(victim)
    (folder / ".out.part").write_bytes(b"mine")
    emulator.faults.inject("files.content", drop=True, count=10)
    with pytest.raises(AzureOpenAIError):
        hook.download_file(file_id=file_id, destination=folder / "out")
    assert victim.read_bytes() == b"precious" and (folder / ".out.part").read_bytes() == b"mine"
    assert _listing(folder) == [".out.part", "out.part"]


def test_held_a_symlinked_parent_and_a_symlink_to_a_directory(hook, emulator, stored, folder, tmp_path):
    file_id, data = stored
    real = tmp_path / "real"
    real.mkdir()
    (folder / "via").symlink_to(real)
    hook.download_file(file_id=file_id, destination=folder / "via" / "out")
    assert (real / "out").read_bytes() == data
    (folder / "dirlink").symlink_to(real)
    before = requests_served(emulator)
    with pytest.raises(AzureOpenAIInvalidArgumentError, match="destination"):
        hook.download_file(file_id=file_id, destination=folder / "dirlink")
    assert requests_served(emulator) == before


def test_held_two_downloads_to_one_destination_leave_one_whole_file(hook, emulator, folder):
    first = os.urandom(3 * MiB)
    second = os.urandom(3 * MiB)
    ids = [
        hook.upload_file(source=__import__("io").BytesIO(d), purpose="assistants", filename=f"adv-c{n}.bin")[
            "id"
        ]
        for n, d in enumerate((first, second))
    ]
    errors: list[BaseException] = []

    def fetch(file_id: str) -> None:
        try:
            hook.download_file(file_id=file_id, destination=folder / "out")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=fetch, args=(i,)) for i in ids * 3]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert (folder / "out").read_bytes() in (first, second)
    assert _listing(folder) == ["out"]


def test_held_a_404_writes_nothing_and_keeps_the_old_file(hook, folder):
    (folder / "out").write_bytes(b"old")
    with pytest.raises(AzureOpenAIError):
        hook.download_file(file_id="file-adv-missing", destination=folder / "out")
    assert (folder / "out").read_bytes() == b"old" and _listing(folder) == ["out"]


def test_held_destination_is_the_source_of_a_running_upload(hook, emulator, stored, folder):
    """A download replaces (rename) the file a multipart upload is reading: the upload must not mix them."""
    file_id, data = stored
    source = folder / "shared.bin"
    original = os.urandom(4 * MiB)
    source.write_bytes(original)
    emulator.faults.set_link(bandwidth_bytes_per_second=2 * MiB)
    accepted = sum(1 for r in emulator.faults.calls("uploads.parts") if r.status == 200)

    def replace_midway() -> None:
        import time

        deadline = time.monotonic() + 30
        while sum(1 for r in emulator.faults.calls("uploads.parts") if r.status == 200) <= accepted:
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)
        hook.download_file(file_id=file_id, destination=source)

    thread = threading.Thread(target=replace_midway)
    thread.start()
    try:
        with pytest.raises(AzureOpenAIError):
            hook.upload_multipart(source=source, purpose="assistants", part_size=MiB, max_concurrency=1)
    finally:
        thread.join()
        emulator.faults.set_link(None)
    assert source.read_bytes() == data


# ------------------------------------------------------------------------------------------ findings
def test_a_replaced_file_keeps_its_permissions(hook, stored, folder):
    """COSMETIC: the temporary file comes from mkstemp (mode 0600), and is renamed over the destination: a
    0644 file that other users or services read becomes 0600 (and a new file ignores the umask)."""
    file_id, _ = stored
    (folder / "shared.bin").write_bytes(b"old")
    os.chmod(folder / "shared.bin", 0o644)
    hook.download_file(file_id=file_id, destination=folder / "shared.bin")
    assert stat.S_IMODE((folder / "shared.bin").stat().st_mode) == 0o644


@pytest.mark.parametrize("race", ["parent removed", "destination becomes a directory"])
def test_a_destination_that_changes_during_the_download_is_a_typed_error(
    hook, emulator, stored, tmp_path, race
):
    """LOW: the destination's directory removed (or a directory created at the destination) while the body
    streams: raw FileNotFoundError / IsADirectoryError from mkstemp's file or os.replace."""
    file_id, _ = stored
    parent = tmp_path / "racy"
    parent.mkdir()
    destination = parent / "out"
    emulator.faults.inject("files.content", delay_seconds=1.0)

    def change() -> None:  # while the service holds the (delayed) content request
        import time

        deadline = time.monotonic() + 30
        while not emulator.faults.in_flight.get("files.content") and time.monotonic() < deadline:
            time.sleep(0.005)
        if race == "parent removed":
            shutil.rmtree(parent)
        else:
            destination.mkdir()

    thread = threading.Thread(target=change)
    thread.start()
    try:
        with pytest.raises(AzureOpenAIError):
            hook.download_file(file_id=file_id, destination=destination)
    finally:
        thread.join()


def test_a_write_error_is_a_typed_error_and_cleans_up(emulator, tmp_path):
    """LOW: a write error mid-download (disk full; here RLIMIT_FSIZE gives EFBIG) escapes as a raw OSError.
    (The temporary file is removed: that part holds.) Run in a subprocess: it lowers its own file limit."""
    code = textwrap.dedent(
        f"""
        import json, os, resource, signal, sys, io
        os.environ["AIRFLOW_CONN_AOAI_DEFAULT"] = json.dumps({{"conn_type": "aoai", "host": {emulator.url!r}, "password": {API_KEY!r}}})
        from airflow_provider_aoai.hooks import AzureOpenAIHook
        from airflow_provider_aoai.exceptions import AzureOpenAIError
        hook = AzureOpenAIHook()
        file = hook.upload_file(source=io.BytesIO(os.urandom(3 << 20)), purpose="assistants", filename="adv-efbig.bin")
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))
        try:
            hook.download_file(file_id=file["id"], destination={str(tmp_path / "big")!r})
        except AzureOpenAIError as exc:
            print("TYPED", type(exc).__name__)
        except Exception as exc:
            print("RAW", type(exc).__name__, exc)
        print("LEFT", sorted(os.listdir({str(tmp_path)!r})))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert "LEFT []" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]
    assert "TYPED" in done.stdout, [
        line for line in done.stdout.splitlines() if line.startswith(("RAW", "TYPED"))
    ]
