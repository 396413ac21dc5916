"""The upload engine's small rules (memory bounds are in test_perf_memory.py, resume in test_lifecycle.py)."""

from __future__ import annotations

from airflow_provider_aoai.models import GiB, MiB
from airflow_provider_aoai.transfer.parts import Progress, check_part_size


def test_part_size_limits():
    assert check_part_size(64 * MiB, 2 * GiB) == 32
    assert check_part_size(MiB, 1) == 1


def test_progress_describes_rate_and_eta():
    progress = Progress(total=100 * MiB, interval=3600)
    progress.add(50 * MiB)
    text = progress.describe()
    assert text.startswith("Uploaded 50.0 of 100.0 MiB (50.0%)") and "MB/s" in text and "ETA" in text
