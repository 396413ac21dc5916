"""The upload engine: a 2 GiB sparse file uploads with bounded memory, against an emulator process."""

from __future__ import annotations

import subprocess
import sys
import tracemalloc

import pytest

from airflow_provider_aoai.hooks import AzureOpenAIHook
from airflow_provider_aoai.models import GiB, MiB
from airflow_provider_aoai.uploads import Progress, check_part_size
from tests.conftest import API_KEY, set_connection


@pytest.fixture
def emulator_process(tmp_path):
    """The emulator in its own process, so that this process's memory is the client's alone."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_provider_aoai.emulator",
            "--api-key",
            API_KEY,
            "--data-dir",
            str(tmp_path / "emulator"),
            "--processing-seconds",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        yield process.stdout.readline().strip().rsplit(" ", 1)[1]
    finally:
        process.terminate()
        process.wait(timeout=30)
        process.stdout.close()


def test_a_2_gib_sparse_file_uploads_with_bounded_memory(emulator_process, monkeypatch, tmp_path):
    source = tmp_path / "sparse.bin"
    with source.open("wb") as out:
        out.truncate(2 * GiB)
    set_connection(monkeypatch, "aoai_big", host=emulator_process, password=API_KEY)
    hook = AzureOpenAIHook(aoai_conn_id="aoai_big")
    part_size, concurrency = 64 * MiB, 4
    tracemalloc.start()
    try:
        upload = hook.upload_multipart(
            source=source, purpose="assistants", part_size=part_size, max_concurrency=concurrency
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert upload["status"] == "completed" and upload["file"]["bytes"] == 2 * GiB
    assert peak <= concurrency * part_size + 32 * MiB, f"peak {peak / MiB:.0f} MiB"


def test_part_size_limits():
    assert check_part_size(64 * MiB, 2 * GiB) == 32
    assert check_part_size(MiB, 1) == 1


def test_progress_describes_rate_and_eta():
    progress = Progress(total=100 * MiB, interval=3600)
    progress.add(50 * MiB)
    text = progress.describe()
    assert text.startswith("Uploaded 50.0 of 100.0 MiB (50.0%)") and "MB/s" in text and "ETA" in text
