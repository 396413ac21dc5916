"""Memory of multipart uploads: flat for local files whatever the part size and concurrency (a 9 GiB sparse
file), near ``max_concurrency x part_size`` for other sources; against an emulator in its own process, so
that this process's traced memory is the client's alone."""

from __future__ import annotations

import tracemalloc

import pytest

from airflow_provider_aoai.hooks import AzureOpenAIHook
from airflow_provider_aoai.models import GiB, MiB
from tests.conftest import API_KEY, set_connection
from tests.emulator_api import emulator_process

LOCAL_FILE_BOUND = 64 * MiB


@pytest.fixture
def emulator_url(tmp_path):
    # the emulator stores runs of zeros as holes: a sparse upload takes no disk
    with emulator_process("--processing-seconds", "0", data_dir=tmp_path / "emulator") as (_, url):
        yield url


def traced_peak(upload) -> tuple[dict, int]:
    tracemalloc.start()
    try:
        result = upload()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


def test_a_9_gib_sparse_local_file_uploads_in_flat_memory(emulator_url, monkeypatch, tmp_path):
    """512 MiB parts, 8 in flight: buffering parts would hold 4 GiB; streaming them holds a few MiB."""
    source = tmp_path / "sparse.bin"
    with source.open("wb") as out:
        out.truncate(9 * GiB)
    set_connection(monkeypatch, "aoai_big", host=emulator_url, password=API_KEY)
    hook = AzureOpenAIHook(aoai_conn_id="aoai_big")
    hook.client  # noqa: B018 - built before measuring, as a worker's baseline includes it

    upload, peak = traced_peak(
        lambda: hook.upload_multipart(
            source=source,
            purpose="assistants",
            part_size=512 * MiB,
            max_concurrency=8,
            progress_interval=3600,
        )
    )
    assert upload["status"] == "completed" and upload["file"]["bytes"] == 9 * GiB
    assert peak <= LOCAL_FILE_BOUND, f"peak traced memory {peak / MiB:.0f} MiB"


def test_remote_sources_hold_at_most_concurrency_parts(emulator_url, monkeypatch):
    """Sources that cannot be read at an offset in parallel (here fsspec's memory://) buffer whole parts."""
    fsspec = pytest.importorskip("fsspec")
    part_size, concurrency, size = 8 * MiB, 2, 48 * MiB
    with fsspec.open("memory://perf/remote.bin", "wb") as out:
        for _ in range(size // MiB):
            out.write(b"r" * MiB)
    set_connection(monkeypatch, "aoai_big", host=emulator_url, password=API_KEY)
    hook = AzureOpenAIHook(aoai_conn_id="aoai_big")
    hook.client  # noqa: B018

    try:
        upload, peak = traced_peak(
            lambda: hook.upload_multipart(
                source="memory://perf/remote.bin",
                purpose="assistants",
                part_size=part_size,
                max_concurrency=concurrency,
            )
        )
    finally:
        fsspec.filesystem("memory").rm("/perf/remote.bin")
    assert upload["file"]["bytes"] == size
    assert peak <= concurrency * part_size + 4 * MiB, f"peak traced memory {peak / MiB:.0f} MiB"
