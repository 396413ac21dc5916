"""Fixtures of the adversarial suite: the project's own (one emulator per session, connections from
AIRFLOW_CONN_* variables, a throwaway AIRFLOW_HOME), plus a DAG bundle for ``adversary/dags``.

Run from the worktree root: ``.venv/bin/python -m pytest adversary -p no:cacheprovider``. A failing test here
is a finding (see ``adversary/FINDINGS.md``); a passing one is an attack that held.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# dag.test() on Airflow 3 needs the DAG's file in a configured bundle: ours, the examples, the test DAGs.
_LOCAL_BUNDLE = "airflow.dag_processing.bundles.local.LocalDagBundle"
os.environ.setdefault(
    "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST",
    json.dumps(
        [
            {"name": "dags-folder", "classpath": _LOCAL_BUNDLE, "kwargs": {}},
            {
                "name": "aoai-test-dags",
                "classpath": _LOCAL_BUNDLE,
                "kwargs": {"path": str(REPO / "tests" / "dags")},
            },
            {
                "name": "aoai-adversary-dags",
                "classpath": _LOCAL_BUNDLE,
                "kwargs": {"path": str(REPO / "adversary" / "dags")},
            },
        ]
    ),
)

from tests.conftest import *  # noqa: E402, F403  (fixtures: emulator, aoai_conn, hook, airflow_db, ...)
from tests.conftest import _clean_faults  # noqa: E402,F401  (autouse)
