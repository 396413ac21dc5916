"""The clients of a system test deployment: the emulator's control surface and Airflow's REST API.

:class:`AirflowAPI` is what a user has: the REST API with a JWT from the simple auth manager's token
endpoint. :class:`EmulatorControl` is the emulator's HTTP control surface (faults, link, request log,
throttle, uploads, blobs) plus the data-plane calls a test needs to inspect the service (list files, download
content).
"""

from __future__ import annotations

import json
from typing import Any

import requests

API_VERSION = "2024-10-21"
HTTP_TIMEOUT = 15.0


class DeploymentError(RuntimeError):
    """A component failed to start, died, or a wait ran out of time."""


class EmulatorControl:
    """The emulator process over HTTP: its control surface and the data-plane reads a test needs."""

    def __init__(self, url: str, api_key: str) -> None:
        self.url = url
        self.api_key = api_key
        self.session = requests.Session()
        self.session.headers["api-key"] = api_key  # the control endpoints need the key, like the service

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.session.request(method, f"{self.url}{path}", timeout=HTTP_TIMEOUT, **kwargs)
        response.raise_for_status()
        return response.json()

    def reset(self) -> None:
        """Forget scripted faults, the link settings and the request log."""
        self._json("DELETE", "/_emulator/faults")

    def inject(self, operation: str, **fault: Any) -> requests.Response:
        """Script a fault (see ``emulator/faults.py``); returns the raw answer so callers can see a 400."""
        return self.session.post(
            f"{self.url}/_emulator/faults", json={"operation": operation, **fault}, timeout=HTTP_TIMEOUT
        )

    def set_link(self, *, bandwidth_bytes_per_second: float | None, latency_seconds: float = 0.0) -> None:
        self._json(
            "POST",
            "/_emulator/link",
            json={
                "bandwidth_bytes_per_second": bandwidth_bytes_per_second,
                "latency_seconds": latency_seconds,
            },
        )

    def requests(self, operation: str | None = None) -> list[dict[str, Any]]:
        """The request log (method, path, operation, status, fault), oldest first."""
        log = self._json("GET", "/_emulator/faults")["requests"]
        return [r for r in log if operation is None or r["operation"] == operation]

    def throttle(self) -> dict[str, dict[str, Any]]:
        """Per class of operation (creates, parts, reads): ``rate``, ``allowed`` and ``throttled``."""
        return self._json("GET", "/_emulator/throttle")

    def set_throttle(self, **rates: float) -> dict[str, dict[str, Any]]:
        """Change some classes' rates (``creates=``, ``parts=``, ``reads=``; 0: no limit); counts are kept."""
        return self._json("POST", "/_emulator/throttle", json=rates)

    def uploads(self) -> list[dict[str, Any]]:
        """Every upload the service holds (id, status, filename, part_ids, file_id), oldest first."""
        return self._json("GET", "/_emulator/uploads")["data"]

    def put_blob(self, name: str, data: bytes) -> str:
        """Store a blob in the emulator's container and return a SAS-like URL the service can import."""
        response = self.session.put(f"{self.url}/_emulator/blobs/{name}", data=data, timeout=HTTP_TIMEOUT)
        response.raise_for_status()
        return f"{self.url}/_emulator/blobs/{name}?sv=2024-05-04&sr=b&sig=systest-signature"

    def files(self, filename: str | None = None) -> list[dict[str, Any]]:
        files = self._json(
            "GET", "/openai/files", params={"api-version": API_VERSION}, headers={"api-key": self.api_key}
        )["data"]
        return [f for f in files if filename is None or f["filename"] == filename]

    def file(self, file_id: str) -> dict[str, Any]:
        return self._json(
            "GET",
            f"/openai/files/{file_id}",
            params={"api-version": API_VERSION},
            headers={"api-key": self.api_key},
        )

    def content(self, file_id: str) -> bytes:
        response = self.session.get(
            f"{self.url}/openai/files/{file_id}/content",
            params={"api-version": API_VERSION},
            headers={"api-key": self.api_key},
            timeout=60,
        )
        response.raise_for_status()
        return response.content


class AirflowAPI:
    """The Airflow REST API as a user calls it: a JWT from the simple auth manager, then ``/api/v2``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session = requests.Session()
        self.triggered: list[tuple[str, str]] = []  # (dag_id, run_id), for diagnostics and cleanup

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.get(f"{self.url}{path}", timeout=HTTP_TIMEOUT, **kwargs)

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.session.request(method, f"{self.url}{path}", timeout=HTTP_TIMEOUT, **kwargs)
        if response.status_code >= 400:
            raise DeploymentError(f"{method} {path} answered {response.status_code}: {response.text[:500]}")
        return response.json()

    def login(self, username: str, password: str) -> None:
        """Get a JWT from the simple auth manager's token endpoint and send it with every call."""
        token = self._json("POST", "/auth/token", json={"username": username, "password": password})
        self.session.headers["Authorization"] = f"Bearer {token['access_token']}"

    def health(self) -> dict[str, Any]:
        return self._json("GET", "/api/v2/monitor/health")

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        """``POST /api/v2/dags/{dag_id}/dagRuns`` with ``logical_date: null``; returns the run id."""
        run = self._json(
            "POST", f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf or {}}
        )
        self.triggered.append((dag_id, run["dag_run_id"]))
        return run["dag_run_id"]

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self._json("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")

    def set_run_state(self, dag_id: str, run_id: str, state: str) -> None:
        self._json("PATCH", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}", json={"state": state})

    def task_instance(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
        return self._json("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")

    def tries(self, dag_id: str, run_id: str, task_id: str) -> list[dict[str, Any]]:
        """Every try of a task instance (state, pid, ...), oldest first."""
        document = self._json("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/tries")
        return sorted(document["task_instances"], key=lambda t: t["try_number"])

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Every task instance of a run, mapped ones included (``map_index``), in pages of 100."""
        instances: list[dict[str, Any]] = []
        while True:
            page = self._json(
                "GET",
                f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances",
                params={"limit": 100, "offset": len(instances), "order_by": "id"},
            )
            instances += page["task_instances"]
            if not page["task_instances"] or len(instances) >= page["total_entries"]:
                return instances

    def mapped_tries(self, dag_id: str, run_id: str, task_id: str, map_index: int) -> list[dict[str, Any]]:
        """Every try of one mapped task instance, oldest first."""
        document = self._json(
            "GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}/tries"
        )
        return sorted(document["task_instances"], key=lambda t: t["try_number"])

    def jobs(self, job_type: str) -> list[dict[str, Any]]:
        """The jobs of ``job_type`` (``TriggererJob``, ``SchedulerJob``, ...) that are alive."""
        return self._json("GET", "/api/v2/jobs", params={"job_type": job_type, "is_alive": "true"})["jobs"]

    def create_pool(self, name: str, slots: int, description: str = "") -> dict[str, Any]:
        """``POST /api/v2/pools``; deferred tasks do not hold a slot (``include_deferred`` false)."""
        return self._json(
            "POST",
            "/api/v2/pools",
            json={"name": name, "slots": slots, "description": description, "include_deferred": False},
        )

    def set_task_state(self, dag_id: str, run_id: str, task_id: str, state: str) -> None:
        """What "Mark failed/success" in the UI does: ``PATCH`` the task instance's state."""
        self._json(
            "PATCH",
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}",
            json={"new_state": state},
        )

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        entry = self._json(
            "GET",
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}",
            params={"deserialize": "true"},
        )
        value = entry["value"]
        return json.loads(value) if isinstance(value, str) and value[:1] in "[{" else value

    def state_store(self, dag_id: str, run_id: str, task_id: str) -> Any:
        """The task instance's ``task_state_store`` entries (Airflow 3.3), or ``None`` when not served."""
        response = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/state-store")
        return response.json() if response.status_code == 200 else None
