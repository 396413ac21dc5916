"""The README says what the code does: its snippets come from the example DAGs, its shell steps run."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO

README = (REPO / "README.md").read_text()


def section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else len(README)]


def fenced(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)\n```", text, re.S)


def howto_snippets() -> dict[str, str]:
    """The blocks between ``# [START howto_...]`` and ``# [END ...]`` in the example DAGs, dedented."""
    snippets = {}
    for path in sorted((REPO / "dags_examples").glob("example_*.py")):
        for match in re.finditer(
            r"# \[START (howto_\w+)\]\n(.*?)\n[ \t]*# \[END \1\]", path.read_text(), re.S
        ):
            snippets[match.group(1)] = textwrap.dedent(match.group(2)).strip("\n")
    return snippets


def test_the_operator_snippets_are_quoted_from_the_example_dags():
    quoted = fenced(section("Operators and sensor"), "python")
    assert len(quoted) >= 4
    unknown = [block for block in quoted if block not in howto_snippets().values()]
    assert not unknown, f"README snippets not found in dags_examples/ (between howto markers): {unknown}"


@pytest.mark.timeout(600)
def test_testing_your_dags_offline_runs_as_written(tmp_path):
    """The shell block of "Testing your DAGs offline", run as is with a fresh temp dir (its AIRFLOW_HOME)."""
    (block,) = fenced(section("Testing your DAGs offline with the emulator"), "bash")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")} | {
        "TMPDIR": str(tmp_path),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    process = subprocess.Popen(
        ["bash", "-euo", "pipefail", "-c", block],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, so a failed run leaves no emulator behind
    )
    try:
        output, _ = process.communicate(timeout=540)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0, output[-5000:]
    assert re.search(r"Fine-tune file file-\w+ is processed", output), output[-5000:]
    assert re.search(r"state[=:] ?'?success", output, re.I), output[-5000:]
