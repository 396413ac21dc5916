"""The test session itself: it cleans up after itself."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO


def test_a_session_leaves_no_temporary_directories_behind(tmp_path):
    """A pytest run (conftest's AIRFLOW_HOME, an emulator, tests' tmp_path) leaves its temp folder empty."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")} | {"TMPDIR": str(scratch)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/test_emulator.py::test_example_get_file",
            "tests/test_emulator.py::test_data_dir_survives_a_restart",
        ],
        check=False,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    left = sorted(str(p.relative_to(scratch)) for p in scratch.rglob("*"))
    # pytest keeps an (empty) numbered base folder per run; the tests' own folders go with their success.
    assert all(p.startswith("pytest-of-") and p.count("/") <= 1 for p in left), left
