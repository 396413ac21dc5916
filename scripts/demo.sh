#!/usr/bin/env bash
# The main job: start the bundled emulator and run the fine-tune example DAG end to end with Airflow,
# then print the uploaded file's id and final status. Sets up .venv first when needed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${VENV:-.venv}/bin/python" scripts/run_demo.py "$@"
