"""Shared fixtures: one emulator per session over real HTTP, connections from AIRFLOW_CONN_* variables."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from importlib.metadata import version
from pathlib import Path

# Airflow reads its configuration on first import: point it at a throwaway home before anything imports it.
_AIRFLOW_HOME = tempfile.mkdtemp(prefix="aoai-tests-airflow-")
os.environ["AIRFLOW_HOME"] = _AIRFLOW_HOME
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(Path(__file__).resolve().parents[1] / "dags_examples")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
os.environ.setdefault("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{_AIRFLOW_HOME}/airflow.db")
if version("apache-airflow").startswith("2."):
    os.environ.setdefault(
        "AIRFLOW__CORE__EXECUTOR", "SequentialExecutor"
    )  # Airflow 2 refuses sqlite otherwise
else:
    # dag.test() on Airflow 3 runs DAGs from a configured bundle: the examples, and the test-only DAGs.
    _LOCAL_BUNDLE = "airflow.dag_processing.bundles.local.LocalDagBundle"
    os.environ.setdefault(
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST",
        json.dumps(
            [
                {"name": "dags-folder", "classpath": _LOCAL_BUNDLE, "kwargs": {}},
                {
                    "name": "aoai-test-dags",
                    "classpath": _LOCAL_BUNDLE,
                    "kwargs": {"path": str(Path(__file__).resolve().parent / "dags")},
                },
                {
                    "name": "aoai-adversarial-dags",
                    "classpath": _LOCAL_BUNDLE,
                    "kwargs": {"path": str(Path(__file__).resolve().parent / "adversarial" / "dags")},
                },
            ]
        ),
    )

import pytest  # noqa: E402

from airflow_provider_aoai.emulator import Emulator, Throttle  # noqa: E402
from airflow_provider_aoai.emulator.quotas import Quotas  # noqa: E402

API_KEY = "emulator-test-api-key-0123456789"
REPO = Path(__file__).resolve().parents[1]
# Vendored copies of the Azure REST API specs (provenance and licence: tests/specs/SOURCES.md).
SPECS = REPO / "tests" / "specs" / "azure-rest-api-specs" / "specification"
DATA_PLANE_EXAMPLES = SPECS / "cognitiveservices/data-plane/AzureOpenAI/authoring/stable/2024-10-21/examples"
FOUNDRY_EXAMPLES = SPECS / "ai/data-plane/Azure.AI.Agents/stable/v1/examples"

CHAT_LINE = {
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
    ]
}
BATCH_LINE = {
    "custom_id": "r1",
    "method": "POST",
    "url": "/chat/completions",
    "body": {"model": "gpt-4o-mini"},
}


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the session's throwaway AIRFLOW_HOME (sqlite database, task logs) once pytest is done."""
    shutil.rmtree(_AIRFLOW_HOME, ignore_errors=True)


def jsonl(records: list[dict]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


@pytest.fixture(scope="session")
def emulator():
    """The emulator for the whole session, with small limits so that limits are cheap to reach, and quotas
    no session reaches (every test adds files to it; the quota tests have an emulator of their own)."""
    with Emulator(
        api_key=API_KEY,
        processing_seconds=0.2,
        max_file_bytes=8 * 1024 * 1024,
        max_part_bytes=4 * 1024 * 1024,
        max_upload_bytes=64 * 1024 * 1024,
        quotas=Quotas(fine_tune_files=10**6, fine_tune_bytes=2**40, batch_files=10**6),
        throttle=Throttle.off(),  # tests create files quickly; the throttle tests have emulators of their own
    ) as emu:
        yield emu


@pytest.fixture(autouse=True)
def _clean_faults(request):
    yield
    if "emulator" in request.fixturenames:
        request.getfixturevalue("emulator").faults.clear()


def set_connection(monkeypatch, conn_id: str = "aoai_default", **fields) -> None:
    """Define an Airflow connection through its AIRFLOW_CONN_* variable (no metadata database needed)."""
    fields.setdefault("conn_type", "aoai")
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(fields))


@pytest.fixture
def aoai_conn(emulator, monkeypatch):
    """aoai_default -> the emulator's data plane with the api key; fast retries."""
    set_connection(
        monkeypatch, host=emulator.url, password=API_KEY, extra={"max_retries": 3, "retry_backoff": 0.01}
    )
    return "aoai_default"


@pytest.fixture
def hook(aoai_conn):
    from airflow_provider_aoai.hooks import AzureOpenAIHook

    return AzureOpenAIHook(aoai_conn_id=aoai_conn)


@pytest.fixture
def chat_file(tmp_path) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_bytes(jsonl([CHAT_LINE] * 50))
    return path


@pytest.fixture(scope="session")
def airflow_db():
    """A fresh sqlite metadata database in the session's throwaway AIRFLOW_HOME (for dag.test())."""
    from airflow.utils.db import initdb

    initdb()
    return _AIRFLOW_HOME
