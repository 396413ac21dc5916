#!/usr/bin/env bash
# The static checks CI runs: ruff check, ruff format --check and mypy (configured in pyproject.toml), with
# the versions pinned in constraints.txt. Sets up .venv (and its lint tools) first when needed.
# To apply ruff's fixes and formatting instead: .venv/bin/ruff check --fix . && .venv/bin/ruff format .
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
EXTRAS=dev bash scripts/setup.sh
bin="${VENV:-.venv}/bin"
status=0
echo "lint: ruff check"
"$bin/ruff" check . || status=1
echo "lint: ruff format --check"
"$bin/ruff" format --check . || status=1
echo "lint: mypy"
"$bin/mypy" || status=1
exit "$status"
