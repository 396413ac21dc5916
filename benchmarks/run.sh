#!/usr/bin/env bash
# Run the benchmarks and print their figures (sets up .venv first when needed).
# Options go to benchmarks/upload_benchmark.py, e.g. --size-mib 256 for a quicker run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${VENV:-.venv}/bin/python" benchmarks/upload_benchmark.py "$@"
