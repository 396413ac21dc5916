"""The README and docs/ say what the code does: their snippets come from the example DAGs, their shell steps
run, their links lead somewhere."""

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
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def section(text: str, title: str) -> str:
    """The section headed ``## title`` (or ``# title``) of ``text``, up to the next heading of its level."""
    level = "## " if f"\n## {title}\n" in text else "# "
    start = text.index(f"\n{level}{title}\n")
    end = text.find(f"\n{level}", start + 1)
    return text[start : end if end != -1 else len(text)]


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


def test_the_readme_shows_one_example_per_operator_quoted_from_the_example_dags():
    quoted = fenced(section(README, "Operators"), "python")
    unknown = [block for block in quoted if block not in howto_snippets().values()]
    assert not unknown, f"README snippets not found in dags_examples/ (between howto markers): {unknown}"
    operators = (
        "ImportFile",
        "MultipartUpload",
        "UploadFile",
        "FileStatusSensor",
        "DeleteFile",
        "PruneFiles",
        "SplitBatchFile",
    )
    for name in operators:
        assert any(f"AzureOpenAI{name}" in block for block in quoted), name


def test_every_quote_is_the_region_it_names():
    """Code marked ``<!-- quoted from <file> [<marker>] -->`` in the README and docs/ is the file's
    [START/END] region."""
    quotes = [
        quote
        for page in PAGES
        for quote in re.findall(
            r"<!-- quoted from (\S+) \[(\S+)\] -->\n```python\n(.*?)\n```", page.read_text(), re.DOTALL
        )
    ]
    assert len(quotes) >= 11
    for path, marker, code in quotes:
        source = (REPO / path).read_text()
        region = re.search(rf"# \[START {marker}\]\n(.*?)\n[ \t]*# \[END {marker}\]", source, re.DOTALL)
        assert region is not None, f"{path} has no [START {marker}]"
        assert textwrap.dedent(region.group(1)) == code, f"the quote of {path} [{marker}] is stale"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_leads_somewhere(page):
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
        if "://" in target:
            continue
        path = (page.parent / target).resolve()
        if path.is_relative_to(REPO / "benchmarks") and not (REPO / "benchmarks").exists():
            continue  # the sdist leaves the benchmarks out (scripts/check_dist.py); a clone has them
        assert path.exists(), f"{page.name} links to {target}, which does not exist"


def test_the_readme_is_a_front_page():
    assert len(README.splitlines()) <= 300
    for title in ("The two commands", "Install", "A connection", "Operators", "Where next"):
        section(README, title)
    assert "bash scripts/demo.sh" in README and "bash scripts/test.sh" in README


@pytest.mark.timeout(600)
def test_testing_your_dags_offline_runs_as_written(tmp_path):
    """The first shell block of docs/emulator.md, run as is with a fresh temp dir (its AIRFLOW_HOME)."""
    block = fenced((REPO / "docs" / "emulator.md").read_text(), "bash")[0]
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
