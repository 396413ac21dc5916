#!/usr/bin/env bash
# Create .venv (if missing) and install the project with its test extras, pinned by constraints.txt.
# Re-installs only when pyproject.toml or the constraints changed. Needs only python3 (3.10+) with venv.
# VENV and CONSTRAINTS select another environment, e.g. Airflow 2.11:
#   VENV=.venv-airflow2 CONSTRAINTS=constraints-airflow2.txt bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
stamp="$VENV/.aoai-installed"
CONSTRAINTS="${CONSTRAINTS:-constraints.txt}"
want="$("$PYTHON" -c 'import hashlib, sys; print(hashlib.sha256(b"".join(open(f, "rb").read() for f in sys.argv[1:])).hexdigest())' pyproject.toml "$CONSTRAINTS")"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -c "$CONSTRAINTS" -e ".[test]"
  echo "$want" > "$stamp"
fi
