"""The main job: run the fine-tune example DAG end to end with Airflow against the bundled emulator.

Starts the emulator, points the ``aoai_default`` connection at it, prepares a throwaway Airflow home
under ``.demo/``, runs ``example_aoai_fine_tune`` with ``dag.test()`` (the sensor defers to the trigger)
and prints the uploaded file's id and final status.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / ".demo"
os.environ["AIRFLOW_HOME"] = str(DEMO / "airflow-home")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags_examples")
os.environ.setdefault("AOAI_EXAMPLE_POLL_SECONDS", "1")


def main() -> int:
    from airflow_provider_aoai.emulator import Emulator

    api_key = secrets.token_urlsafe(24)
    with Emulator(api_key=api_key, processing_seconds=3) as emulator:
        print(f"AOAI emulator listening on {emulator.url}", flush=True)
        os.environ["AIRFLOW_CONN_AOAI_DEFAULT"] = json.dumps(
            {"conn_type": "aoai", "host": emulator.url, "password": api_key}
        )
        from airflow.utils.db import initdb

        initdb()
        spec = importlib.util.spec_from_file_location(
            "example_aoai_fine_tune", REPO / "dags_examples" / "example_aoai_fine_tune.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        report = DEMO / "report.json"
        report.unlink(missing_ok=True)
        run = module.dag.test(run_conf={"workdir": str(DEMO / "data"), "report_path": str(report)})
        state = str(getattr(run, "state", "unknown"))
        if not report.exists():
            print(f"The DAG run ended {state} without a report", file=sys.stderr)
            return 1
        summary = json.loads(report.read_text())
        print()
        print(f"DAG run: {state}")
        print(f"File id: {summary['file_id']}")
        print(f"Status:  {summary['status']}")
        return 0 if summary["status"] == "processed" and state.endswith("success") else 1


if __name__ == "__main__":
    sys.exit(main())
