"""Fixtures of the system tests: a real Airflow 3.3 deployment (and emulator) per test module.

The system tests start Airflow's components as separate processes: ``test_exactly_once.py`` takes about two
minutes, ``test_celery_scale.py`` (CeleryExecutor, PostgreSQL, Redis) about five more. They are part of the
whole suite (``bash scripts/test.sh``); leave them out of a quick loop with ``-m "not system"``.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import time
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.system.deployment import Deployment

DAGS = Path(__file__).resolve().parent / "dags"
DAG_IDS = [
    "aoai_system_resume",
    "aoai_system_complete",
    "aoai_system_mark_failed",
    "aoai_system_reattach_import",
    "aoai_system_reattach_upload",
    "aoai_system_deferred",
]
SYSTEM_DIR = Path(__file__).resolve().parent
_deployment_key = pytest.StashKey[Deployment]()
_started_key = pytest.StashKey[float]()


def airflow_version() -> tuple[int, int]:
    major, minor = version("apache-airflow").split(".")[:2]
    return int(major), int(minor)


AIRFLOW_TOO_OLD = airflow_version() < (3, 3)
AIRFLOW_TOO_OLD_REASON = (
    f"system tests need Airflow >= 3.3 (task_state_store, the task SDK supervisor); "
    f"this is {version('apache-airflow')}"
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "system: starts a real Airflow deployment (about two minutes; deselect with -m 'not system')",
    )


@contextlib.contextmanager
def running(request: pytest.FixtureRequest, deployment: Deployment) -> Iterator[Deployment]:
    """Start ``deployment``, yield it, and always stop it; its root is removed when no test failed.

    While it runs, its logs are what a failing system test's report shows, and SIGTERM or SIGHUP (a CI
    timeout, `kill`) interrupt pytest so that the deployment is still stopped.
    """
    previous_deployment = request.config.stash.get(_deployment_key, None)
    request.config.stash[_deployment_key] = deployment
    started = time.monotonic()

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")  # so that pytest still runs the teardown below

    # A CI timeout or `kill` sends SIGTERM, which would end pytest without teardown and leave every
    # component (each in its own session) running.
    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    started_up = False
    try:
        deployment.start()
        started_up = True
        with request.config.pluginmanager.getplugin("capturemanager").global_and_fixture_disabled():
            print(
                f"\n[system] {type(deployment).__name__} ready in {time.monotonic() - started:.1f}s "
                f"(root {deployment.root})",
                flush=True,
            )
        yield deployment
    finally:
        deployment.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if previous_deployment is not None:
            request.config.stash[_deployment_key] = previous_deployment
        else:
            del request.config.stash[_deployment_key]
        if started_up and request.session.testsfailed == 0:  # a failed start keeps its logs too
            shutil.rmtree(deployment.root, ignore_errors=True)


# Module scope: the deployment of test_exactly_once.py is stopped before another module starts its own (two
# deployments at once would share the 2 cores, and the log server ports).
@pytest.fixture(scope="module")
def deployment(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """Emulator, api-server, scheduler, dag-processor and triggerer, started once and always stopped."""
    if AIRFLOW_TOO_OLD:
        pytest.skip(AIRFLOW_TOO_OLD_REASON)
    with running(request, Deployment(tmp_path_factory.mktemp("aoai-system"), DAGS, DAG_IDS)) as deployment:
        yield deployment


@pytest.fixture
def system(deployment: Deployment, request: pytest.FixtureRequest):
    """The deployment, with the emulator's faults, link and request log reset for this test.

    Afterwards any run this test left unfinished is marked failed (its task processes are then stopped
    by their supervisors), so the next test's request log holds only its own traffic.
    """
    request.node.stash[_started_key] = time.time()
    deployment.emulator.reset()
    already = len(deployment.api.triggered)
    yield deployment
    for dag_id, run_id in deployment.api.triggered[already:]:
        if deployment.api.dag_run(dag_id, run_id)["state"] not in ("success", "failed"):
            deployment.api.set_run_state(dag_id, run_id, "failed")
    deployment.emulator.reset()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """On failure, attach the tail of every component's log and of this test's task logs to the report."""
    report = yield
    deployment = item.config.stash.get(_deployment_key, None)
    if report.failed and deployment is not None and item.get_closest_marker("system"):
        report.sections.append(
            ("airflow deployment logs", deployment.diagnostics(since=item.stash.get(_started_key, 0.0)))
        )
    return report


@pytest.fixture
def say(capsys: pytest.CaptureFixture[str]):
    """Print straight to the terminal (not captured): the scenarios' figures are part of the proof."""

    def say(*lines: str) -> None:
        with capsys.disabled():
            print()
            for line in lines:
                print(f"[system] {line}", flush=True)

    return say
