"""A real Airflow deployment for the system tests, each component in its own process.

:class:`Deployment` starts, in a throwaway ``AIRFLOW_HOME`` (SQLite, LocalExecutor): the emulator
(``python -m airflow_provider_aoai.emulator``), ``airflow db migrate``, then ``airflow api-server``,
``scheduler``, ``dag-processor`` and ``triggerer``. Every process gets the same environment (the config
below, tuned for speed, and ``AIRFLOW_CONN_AOAI_DEFAULT`` pointing at the emulator), runs in its own process
group and writes its output to ``<root>/logs/<name>.log``. :meth:`Deployment.stop` ends every process it
started and their descendants (task supervisors and task processes included), even when a test failed.

Its clients, :class:`~tests.system.clients.AirflowAPI` (the REST API, as a user has it) and
:class:`~tests.system.clients.EmulatorControl` (the emulator's control surface and data-plane reads), live in
:mod:`tests.system.clients`. A subclass changes the configuration (:meth:`Deployment.airflow_config`,
:meth:`~Deployment.connection_extra`, :meth:`~Deployment.emulator_options`) and the components it starts
(:attr:`~Deployment.components`, :meth:`~Deployment.start_component`), as
:mod:`tests.system.celery_deployment` does.

Nothing here sleeps for a fixed time: every wait is :func:`wait_for`, a condition with a deadline.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import psutil  # type: ignore[import-untyped]
import requests

from tests.system.clients import AirflowAPI, DeploymentError, EmulatorControl

T = TypeVar("T")

# Every file takes this long from pending to processed, long enough for a test to kill a task (or the
# triggerer) while it waits.
PROCESSING_SECONDS = 15
STARTUP_TIMEOUT = 180.0  # migrate + four components on a busy 2-core machine
STOP_TIMEOUT = 15.0
# Every wait of the tests is also cut at this many seconds after the deployment started, so the whole
# module ends in bounded time (about 2 minutes when all goes well) even if every scenario hangs.
BUDGET_SECONDS = 480.0
# [workers] min_heartbeat_interval: how often a task's supervisor heartbeats, and so how soon it notices that
# its task instance was marked failed (it learns it from the heartbeat's answer).
SUPERVISOR_HEARTBEAT_SECONDS = 1
# Airflow's supervisor sends SIGTERM, waits this long, then SIGKILLs (task_sdk supervisor ``kill()``).
SUPERVISOR_ESCALATION_SECONDS = 5.0

# Processes of every Deployment not yet stopped: the atexit safety net ends them if a test run is
# interrupted in a way that skips fixture teardown.
_LIVE: list[Deployment] = []


def wait_for(
    condition: Callable[[], T | Literal[False] | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.2,
    check: Callable[[], None] | None = None,
) -> T:
    """Poll ``condition`` until it returns something truthy and return that; fail after ``timeout`` seconds.

    :param what: what we wait for, for the error message.
    :param check: called before each poll; raises to stop waiting early (e.g. a component died).
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        if check is not None:
            check()
        last = condition()
        if last:
            return last  # type: ignore[return-value]  # truthy: neither None nor False
        if time.monotonic() >= deadline:
            raise DeploymentError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def environ_without_airflow() -> dict[str, str]:
    """Our environment minus Airflow's settings (tests/conftest.py sets unit-test ones for this process)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "_AIRFLOW"))}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log, without the api-server's access log (one line per request)."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join([line for line in text.splitlines() if "[http.access]" not in line][-lines:])


def gone(process: psutil.Process) -> bool:
    """True once ``process`` exited (a zombie waiting for its parent to reap it counts as exited)."""
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# ------------------------------------------------------------------------------------------ processes
@dataclass
class Component:
    """One process we started, in its own process group, its output in ``log_path``."""

    name: str
    popen: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tree(self) -> list[psutil.Process]:
        """This process and its descendants (supervisors, task processes, trigger runners)."""
        try:
            root = psutil.Process(self.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def signal_group(self, sig: int) -> None:
        """Signal our process group, while its leader is not yet reaped (so the id cannot be reused)."""
        if self.popen.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)

    def kill_tree(self, sig: int = signal.SIGKILL) -> list[psutil.Process]:
        """Send ``sig`` to the process group and to every descendant (some live in groups of their own)."""
        tree = self.tree()
        self.signal_group(sig)
        for process in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(sig)
        return tree


# ------------------------------------------------------------------------------------------ deployment
class Deployment:
    """Emulator + Airflow (api-server, scheduler, dag-processor, triggerer) as separate processes.

    :param root: a fresh directory: ``AIRFLOW_HOME`` is ``root/home``, process logs go to ``root/logs``.
    :param dags_folder: the DAG files the dag-processor parses.
    :param dag_ids: the DAGs :meth:`start` waits for before returning.
    """

    components = ("api-server", "scheduler", "dag-processor", "triggerer")
    # What a subclass may change: the emulator's processing time and its other options, the budget of waits.
    processing_seconds: float = PROCESSING_SECONDS
    budget_seconds: float = BUDGET_SECONDS
    diagnostic_task_logs: int | None = None  # a failure's report shows at most this many task logs

    def __init__(self, root: Path, dags_folder: Path, dag_ids: list[str]) -> None:
        self.root = root
        self.home = root / "home"
        self.log_dir = root / "logs"
        self.dags_folder = dags_folder
        self.dag_ids = dag_ids
        self.api_key = "systest-" + secrets.token_hex(16)
        self.password = secrets.token_urlsafe(16)
        self.processes: dict[str, Component] = {}
        self.retired: list[Component] = []  # killed on purpose by a test; their logs still matter
        self.env: dict[str, str] = {}
        self._emulator: EmulatorControl | None = None
        self._api: AirflowAPI | None = None
        self.budget_ends = time.monotonic() + self.budget_seconds

    @property
    def emulator(self) -> EmulatorControl:
        if self._emulator is None:
            raise DeploymentError("the emulator is not started")
        return self._emulator

    @property
    def api(self) -> AirflowAPI:
        if self._api is None:
            raise DeploymentError("the api-server is not started")
        return self._api

    # ---------------------------------------------------------------- configuration
    def airflow_config(self, api_port: int) -> dict[str, dict[str, str]]:
        """Airflow's configuration, by section and option (a subclass may extend it)."""
        return {
            "core": {
                "dags_folder": str(self.dags_folder),
                "load_examples": "False",
                "executor": "LocalExecutor",
                "parallelism": "8",
                "dags_are_paused_at_creation": "False",
                "default_task_retry_delay": "1",
                "execution_api_server_url": f"http://127.0.0.1:{api_port}/execution/",
                "fernet_key": "",
                "simple_auth_manager_users": "admin:admin",
                "simple_auth_manager_passwords_file": str(self.home / "passwords.json"),
            },
            "database": {"sql_alchemy_conn": f"sqlite:///{self.home / 'airflow.db'}"},
            "api": {
                "host": "127.0.0.1",
                "port": str(api_port),
                "workers": "1",
                "secret_key": secrets.token_hex(16),
            },
            "api_auth": {"jwt_secret": secrets.token_hex(32)},
            "scheduler": {"scheduler_heartbeat_sec": "1", "scheduler_idle_sleep_time": "0.5"},
            # Parse the folder right away and often; one parser process (the machine has 2 cores).
            "dag_processor": {
                "refresh_interval": "2",
                "min_file_process_interval": "60",
                "parsing_processes": "1",
            },
            # A SIGKILLed triggerer's triggers go to another triggerer once its heartbeat is this old.
            "triggerer": {"job_heartbeat_sec": "1", "triggerer_health_check_threshold": "5"},
            "workers": {"min_heartbeat_interval": str(SUPERVISOR_HEARTBEAT_SECONDS)},
            "logging": {"logging_level": "INFO"},
        }

    def connection_extra(self) -> dict[str, Any]:
        """The ``extra`` of the ``aoai_default`` connection."""
        return {"max_retries": 3, "retry_backoff": 0.1, "timeout": 60}

    def emulator_options(self) -> list[str]:
        """Command line options of the emulator besides port, api key, processing time and data dir."""
        return []

    def _environment(self, emulator_url: str, api_port: int) -> dict[str, str]:
        env = environ_without_airflow()
        for section, options in self.airflow_config(api_port).items():
            for option, value in options.items():
                env[f"AIRFLOW__{section.upper()}__{option.upper()}"] = value
        env["AIRFLOW_HOME"] = str(self.home)
        env["AIRFLOW_CONN_AOAI_DEFAULT"] = json.dumps(
            {
                "conn_type": "aoai",
                "host": emulator_url,
                "password": self.api_key,
                "extra": self.connection_extra(),
            }
        )
        env["PYTHONUNBUFFERED"] = "1"
        return env

    # ---------------------------------------------------------------- processes
    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Component:
        """Start ``argv`` in its own process group (so it and its children can be killed together)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        generation = 1
        while log_path.exists():  # a replacement (e.g. a new triggerer): keep the old log apart
            generation += 1
            log_path = self.log_dir / f"{name}.{generation}.log"
        with log_path.open("ab") as log:
            popen = subprocess.Popen(
                argv,
                env=env or self.env,
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        component = Component(name, popen, log_path)
        self.processes[name] = component
        return component

    def airflow(self, name: str, *args: str) -> Component:
        return self.spawn(name, [sys.executable, "-m", "airflow", *args])

    def start_component(self, name: str) -> Component:
        return self.airflow(name, name)

    def start(self) -> None:
        """Start everything; return once the API answers, all components are healthy and the DAGs parsed."""
        _LIVE.append(self)
        self.budget_ends = time.monotonic() + self.budget_seconds
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "passwords.json").write_text(json.dumps({"admin": self.password}))

        emulator = self.spawn(
            "emulator",
            [
                sys.executable,
                "-m",
                "airflow_provider_aoai.emulator",
                "--port",
                "0",
                "--api-key",
                self.api_key,
                "--processing-seconds",
                str(self.processing_seconds),
                "--data-dir",
                str(self.root / "emulator"),
                *self.emulator_options(),
            ],
            env=environ_without_airflow(),
        )
        prefix = "AOAI emulator listening on "

        def emulator_url() -> str | None:
            for line in emulator.log_path.read_text(errors="replace").splitlines():
                if line.startswith(prefix):
                    return line[len(prefix) :].strip()
            return None

        url = wait_for(emulator_url, timeout=30, what="the emulator to listen", check=self.check_alive)
        self._emulator = EmulatorControl(url, self.api_key)

        api_port = free_port()
        self.env = self._environment(url, api_port)
        migrate = self.airflow("db-migrate", "db", "migrate")
        try:
            code = migrate.popen.wait(timeout=STARTUP_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise DeploymentError(f"airflow db migrate did not finish in {STARTUP_TIMEOUT:.0f}s") from None
        if code != 0:
            raise DeploymentError(f"airflow db migrate exited {code}")
        del self.processes["db-migrate"]
        self.retired.append(migrate)

        for name in self.components:
            self.start_component(name)
        self._api = AirflowAPI(f"http://127.0.0.1:{api_port}")
        deadline = time.monotonic() + STARTUP_TIMEOUT

        def api_up() -> bool:
            try:
                return self.api.get("/api/v2/monitor/health").status_code == 200
            except requests.ConnectionError:
                return False

        wait_for(api_up, timeout=deadline - time.monotonic(), what="the api-server", check=self.check_alive)
        self.api.login("admin", self.password)
        wait_for(
            self.unhealthy_components_none,
            timeout=deadline - time.monotonic(),
            what="scheduler, triggerer and dag-processor to report healthy",
            interval=0.5,
            check=self.check_alive,
        )
        wait_for(
            self.dags_parsed,
            timeout=deadline - time.monotonic(),
            what=f"the DAGs {self.dag_ids} to be parsed",
            interval=0.5,
            check=self.check_alive,
        )

    def unhealthy_components_none(self) -> bool:
        health = self.api.health()
        return all((health.get(part) or {}).get("status") == "healthy" for part in health)

    def dags_parsed(self) -> bool:
        errors = self.api._json("GET", "/api/v2/importErrors")["import_errors"]
        if errors:
            raise DeploymentError("DAG import errors:\n" + "\n".join(e["stack_trace"] for e in errors))
        return all(self.api.get(f"/api/v2/dags/{dag_id}").status_code == 200 for dag_id in self.dag_ids)

    def check_alive(self) -> None:
        """Raise if a component we did not kill on purpose has exited."""
        for component in self.processes.values():
            if not component.alive():
                raise DeploymentError(
                    f"{component.name} exited with {component.popen.returncode}:\n{tail(component.log_path)}"
                )

    def wait_for(
        self,
        condition: Callable[[], T | Literal[False] | None],
        *,
        timeout: float,
        what: str,
        interval: float = 0.2,
    ) -> T:
        """:func:`wait_for` that also stops early when a component died, and within the module's budget."""
        remaining = self.budget_ends - time.monotonic()
        if remaining <= 0:
            raise DeploymentError(f"the system tests' budget of {self.budget_seconds:.0f}s is spent")
        return wait_for(
            condition, timeout=min(timeout, remaining), what=what, interval=interval, check=self.check_alive
        )

    def kill_component(self, name: str) -> float:
        """SIGKILL a component and all its descendants at once, as when its container dies.

        Returns the time of the kill; the component is retired (:meth:`check_alive` no longer watches it).
        """
        component = self.processes.pop(name)
        self.retired.append(component)
        killed_at = time.time()
        tree = component.kill_tree(signal.SIGKILL)
        wait_for(lambda: all(gone(p) for p in tree), timeout=10, what=f"every process of {name} to exit")
        component.popen.wait(timeout=5)
        return killed_at

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """End every process we started and all their descendants within about ``timeout`` seconds.

        SIGTERM to every process tree at once (task processes run in process groups of their own, so each
        descendant is signalled too), then SIGKILL to whatever is left at the deadline. Safe to call twice.
        """
        components = [*self.processes.values(), *self.retired]
        processes = [p for component in components for p in component.kill_tree(signal.SIGTERM)]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not all(gone(p) for p in processes):
            for component in components:
                component.popen.poll()  # reap our own children, so that they count as gone
            time.sleep(0.1)
        for component in components:
            component.signal_group(signal.SIGKILL)
        for process in processes:
            if not gone(process):
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.kill()
        for component in components:
            with contextlib.suppress(subprocess.TimeoutExpired):
                component.popen.wait(timeout=5)
        if self in _LIVE:
            _LIVE.remove(self)

    # ---------------------------------------------------------------- tasks
    def task_process(self, ti: dict[str, Any]) -> psutil.Process:
        """The process running a task instance: the TI's ``pid``, checked to be a child of a supervisor
        under our scheduler (so a test never signals a process it did not start)."""
        process = psutil.Process(ti["pid"])
        ancestors = [p.pid for p in process.parents()]
        scheduler = self.processes["scheduler"].pid
        if scheduler not in ancestors or ancestors[0] == scheduler:
            raise DeploymentError(
                f"pid {ti['pid']} of {ti['task_id']} is not a task process of our scheduler"
            )
        return process

    def running_task(
        self, dag_id: str, run_id: str, task_id: str, try_number: int = 1
    ) -> dict[str, Any] | None:
        """The TI if it is ``running`` in ``try_number`` with its task process alive, else ``None``."""
        ti = self.api.task_instance(dag_id, run_id, task_id)
        if ti["state"] != "running" or ti["try_number"] != try_number or not ti.get("pid"):
            return None
        try:
            process = self.task_process(ti)
        except psutil.NoSuchProcess:
            return None
        return ti if not gone(process) else None

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float) -> dict[str, Any]:
        """Wait until the DAG run is ``success`` or ``failed`` and return it."""

        def finished() -> dict[str, Any] | None:
            run = self.api.dag_run(dag_id, run_id)
            return run if run["state"] in ("success", "failed") else None

        return self.wait_for(
            finished,
            timeout=timeout,
            what=f"DAG run {dag_id} {run_id} to finish",
            interval=0.5,
        )

    def task_logs(self, dag_id: str, run_id: str) -> dict[str, Path]:
        """The task log files of a run, by ``task_id/attempt=N``."""
        base = self.home / "logs" / f"dag_id={dag_id}"
        logs: dict[str, Path] = {}
        for path in sorted(base.glob("**/attempt=*.log")):
            parts = path.relative_to(base).parts
            if parts[0] == f"run_id={run_id}":
                logs["/".join(p.split("=", 1)[1] for p in parts[1:-1]) + "/" + path.stem] = path
        return logs

    def task_log_events(
        self, dag_id: str, run_id: str, task_id: str, try_number: int
    ) -> list[dict[str, Any]]:
        """The JSON events of a task's log (supervisor and task lines), with ``timestamp`` parsed."""
        path = self.task_logs(dag_id, run_id).get(f"{task_id}/attempt={try_number}")
        events = []
        for line in path.read_text(errors="replace").splitlines() if path else []:
            try:
                event = json.loads(line)
                event["timestamp"] = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
            except (ValueError, KeyError, TypeError):
                continue
            events.append(event)
        return events

    def diagnostics(self, since: float = 0.0) -> str:
        """The tail of every component's log and every task log of the runs triggered since ``since``."""
        out = [f"deployment root (kept): {self.root}"]
        for component in [*self.retired, *self.processes.values()]:
            if component.log_path.exists():
                state = "running" if component.alive() else f"exited {component.popen.returncode}"
                out += [
                    f"===== {component.name} ({state}): {component.log_path}",
                    tail(component.log_path, 20),
                ]
        logs = [
            (path.stat().st_mtime, f"===== task log {dag_id} {run_id} {name}", path)
            for dag_id, run_id in (self._api.triggered if self._api else [])
            for name, path in self.task_logs(dag_id, run_id).items()
            if path.stat().st_mtime >= since
        ]
        if self.diagnostic_task_logs is not None and len(logs) > self.diagnostic_task_logs:
            out.append(f"===== the {self.diagnostic_task_logs} task logs written last of {len(logs)}:")
            logs = sorted(logs, key=lambda log: log[0])[-self.diagnostic_task_logs :]
        for _, header, path in logs:
            out += [header, tail(path, 25)]
        return "\n".join(out)


@atexit.register
def _stop_leftovers() -> None:
    for deployment in _LIVE.copy():  # stop() removes itself
        deployment.stop()
