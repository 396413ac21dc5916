"""A real Airflow deployment on CeleryExecutor, PostgreSQL and Redis, each component in its own process.

:class:`CeleryDeployment` is a :class:`~tests.system.deployment.Deployment` that first starts a throwaway
Redis (the Celery broker) and PostgreSQL (Airflow's metadata database and Celery's result backend, through
``db+postgresql://``), then the emulator with its rate limits on, ``airflow db migrate``, and as separate
processes: ``api-server``, ``scheduler``, ``dag-processor``, two ``triggerer`` and two ``celery worker``
(distinct Celery hostnames, a small concurrency each). It knows which TriggererJob each triggerer process is
(it starts them one after the other and reads the jobs API in between), which worker process runs a task
instance (the task process is in the worker's process tree), and stops Redis and PostgreSQL last.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.system.clients import DeploymentError
from tests.system.deployment import Component, Deployment, tail
from tests.system.services import PostgresServer, RedisServer

WORKER_CONCURRENCY = 4
# Seconds without a heartbeat after which the scheduler fails a running task instance whose worker died
# (its supervisor heartbeats every second); the task is then retried.
TASK_HEARTBEAT_TIMEOUT = 20
# Seconds a task instance may stay queued before the scheduler requeues it: a Celery message a killed worker
# had taken but not started comes back this way, not after the broker's visibility timeout (a day).
TASK_QUEUED_TIMEOUT = 90
WORKER_READY_TIMEOUT = 120.0


class CeleryDeployment(Deployment):
    """Redis + PostgreSQL + emulator (throttled) + api-server, scheduler, dag-processor, 2 triggerers and 2
    Celery workers.

    :param throttle: the emulator's rate limits, requests per second by class (``creates``, ``parts``,
        ``reads``; 0 = no limit).
    :param processing_seconds: how long each file stays pending (long enough for waits to be deferred).
    :param budget_seconds: every wait of the test is cut this many seconds after the start.
    """

    components = ("api-server", "scheduler", "dag-processor", "triggerer-1", "worker-1", "worker-2")
    diagnostic_task_logs = 12  # of about 200

    def __init__(
        self,
        root: Path,
        dags_folder: Path,
        dag_ids: list[str],
        *,
        throttle: dict[str, float],
        processing_seconds: float,
        budget_seconds: float,
    ) -> None:
        self.processing_seconds = processing_seconds
        self.budget_seconds = budget_seconds
        super().__init__(root, dags_folder, dag_ids)
        self.throttle_rates = throttle
        self.redis = RedisServer(root, self.log_dir)
        self.postgres = PostgresServer(root, self.log_dir)
        self.triggerer_jobs: dict[str, int] = {}  # triggerer component name -> its TriggererJob id
        self.worker_names: list[str] = []

    @property
    def canaries(self) -> dict[str, str]:
        """What must never appear in a log: the service's api key and the database password."""
        return {"api key": self.api_key, "PostgreSQL password": self.postgres.password}

    # ---------------------------------------------------------------- configuration
    def airflow_config(self, api_port: int) -> dict[str, dict[str, str]]:
        config = super().airflow_config(api_port)
        # Room for every worker slot and the deferred tasks' resumptions; the pool limits the uploads.
        config["core"].update({"executor": "CeleryExecutor", "parallelism": "32"})
        config["database"] = {
            "sql_alchemy_conn": self.postgres.url("postgresql+psycopg2"),
            "sql_alchemy_pool_size": "2",
            "sql_alchemy_max_overflow": "8",
        }
        # The result backend names its driver: SQLAlchemy 2.1's default for postgresql is psycopg 3.
        config["celery"] = {
            "broker_url": self.redis.url,
            "result_backend": self.postgres.url("db+postgresql+psycopg2"),
            "worker_concurrency": str(WORKER_CONCURRENCY),
            "worker_prefetch_multiplier": "1",
            "operation_timeout": "10",
            "sync_parallelism": "1",
        }
        config["scheduler"].update(
            {
                "task_instance_heartbeat_timeout": str(TASK_HEARTBEAT_TIMEOUT),
                "task_instance_heartbeat_timeout_detection_interval": "2",
                "task_queued_timeout": str(TASK_QUEUED_TIMEOUT),
                "task_queued_timeout_check_interval": "10",
            }
        )
        return config

    def connection_extra(self) -> dict[str, Any]:
        # A throttled service answers 429 with Retry-After: the client waits and retries, within its budget.
        return {"max_retries": 10, "retry_backoff": 0.1, "timeout": 60}

    def emulator_options(self) -> list[str]:
        options = []
        for name, rate in self.throttle_rates.items():
            options += [f"--max-{name}-per-second", str(rate)]
        return options

    # ---------------------------------------------------------------- processes
    def start_component(self, name: str) -> Component:
        """``triggerer-N`` and ``worker-N`` (a Celery worker whose Celery hostname is ``worker-N@<host>``)."""
        if name.startswith("triggerer-"):
            # Logs are read from the shared AIRFLOW_HOME; a log server each would fight over one port.
            return self.airflow(name, "triggerer", "--skip-serve-logs")
        if name.startswith("worker-"):
            self.worker_names.append(name)
            return self.airflow(
                name,
                "celery",
                "worker",
                "--celery-hostname",
                f"{name}@%h",
                "--concurrency",
                str(WORKER_CONCURRENCY),
                "--skip-serve-logs",
            )
        return super().start_component(name)

    def start(self) -> None:
        """Redis and PostgreSQL, then the deployment; then the second triggerer, and the workers ready."""
        self.redis.start()
        self.postgres.start()
        super().start()
        first = self.wait_for(
            lambda: self.api.jobs("TriggererJob"), timeout=60, what="the first triggerer's job"
        )
        self.triggerer_jobs["triggerer-1"] = first[0]["id"]
        self.start_triggerer("triggerer-2")
        for name in [n for n in self.components if n.startswith("worker-")]:
            self.wait_worker_ready(name)

    def start_triggerer(self, name: str) -> int:
        """Start a triggerer and return its TriggererJob id, once its job heartbeats."""
        known = {job["id"] for job in self.api.jobs("TriggererJob")} | set(self.triggerer_jobs.values())
        self.start_component(name)

        def new_job() -> int | None:
            fresh = [job["id"] for job in self.api.jobs("TriggererJob") if job["id"] not in known]
            return fresh[0] if fresh else None

        self.triggerer_jobs[name] = self.wait_for(
            new_job, timeout=90, what=f"{name} to heartbeat", interval=0.5
        )
        return self.triggerer_jobs[name]

    def wait_worker_ready(self, name: str) -> None:
        """Until Celery logs ``<name>@<host> ready.`` (connected to the broker, consuming tasks)."""
        component = self.processes[name]

        def ready() -> bool:
            text = component.log_path.read_text(errors="replace")
            return any(f"{name}@" in line and " ready." in line for line in text.splitlines())

        self.wait_for(ready, timeout=WORKER_READY_TIMEOUT, what=f"Celery {name} to be ready", interval=0.5)

    def check_alive(self) -> None:
        super().check_alive()
        self.redis.check_alive()
        self.postgres.check_alive()

    def worker_of(self, pid: int | None) -> str | None:
        """The live worker whose process tree holds ``pid`` (a task process), else ``None``."""
        if not pid:
            return None
        for name in self.worker_names:
            component = self.processes.get(name)
            if component is not None and pid in {p.pid for p in component.tree()}:
                return name
        return None

    def stop(self, timeout: float = 15.0) -> None:
        """Airflow's processes first, then the broker and the database they talk to."""
        try:
            super().stop(timeout)
        finally:
            self.redis.stop()
            self.postgres.stop()

    def diagnostics(self, since: float = 0.0) -> str:
        out = [super().diagnostics(since)]
        for server in (self.redis, self.postgres):
            if server.component is not None and server.component.log_path.exists():
                out += [
                    f"===== {server.name}: {server.component.log_path}",
                    tail(server.component.log_path, 20),
                ]
        return "\n".join(out)

    def log_files(self) -> list[Path]:
        """Every log this deployment wrote: each process's output and every task and trigger log."""
        files = sorted(p for p in self.log_dir.glob("*.log") if p.is_file())
        files += sorted(p for p in (self.home / "logs").rglob("*") if p.is_file())
        if not files:
            raise DeploymentError("no log files found")
        return files
