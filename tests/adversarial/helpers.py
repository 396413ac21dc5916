"""Small helpers shared by the adversarial tests (no mocks: they read the emulator and Airflow's database)."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Any

ADVERSARY = Path(__file__).resolve().parent


def load_dag(dag_id: str, file: str = "adv_exactly_once.py") -> Any:
    path = ADVERSARY / "dags" / file
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {d.dag_id: d for d in vars(module).values() if hasattr(d, "dag_id") and hasattr(d, "test")}[dag_id]


def xcom_value(dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> Any:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter_by(dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=map_index, key="return_value")
            .one_or_none()
        )
        return None if row is None else XComModel.deserialize_value(row)


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def content(emulator, file_id: str) -> bytes:
    stream, _ = emulator.store.open_content(file_id)
    with stream:
        return stream.read()


def requests_served(emulator) -> int:
    return len(emulator.faults.requests)


def tries(run) -> dict[str, int]:
    return {ti.task_id: ti.try_number for ti in run.get_task_instances()}
