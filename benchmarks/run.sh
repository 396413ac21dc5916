#!/usr/bin/env bash
# Every benchmark in one command, each figure printed next to its reference measured in the same run:
# uploads of 512 MiB and 1 GiB (--big adds 9 GiB) against the openai SDK, the link limit, one core's md5
# rate and the worker's baseline RSS; then 1,000 deferred waits in one event loop. --quiet-load 0.7 waits
# for a quiet machine first; --results rewrites benchmarks/RESULTS.md. Sets up .venv first when needed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
EXTRAS=bench bash scripts/setup.sh >/dev/null
exec "${VENV:-.venv}/bin/python" benchmarks/run_all.py "$@"
