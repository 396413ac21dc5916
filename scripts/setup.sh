#!/usr/bin/env bash
# Create .venv (if missing) and install the project (editable) with its test extras, pinned by constraints.txt
# (with constraints.txt, also the system extra: see EXTRAS below).
# Re-installs only when pyproject.toml, the constraints or the extras changed. Needs only python3 (3.11+).
# Environment variables select another environment:
#   VENV=.venv-airflow2 CONSTRAINTS=constraints-airflow2.txt bash scripts/test.sh   # Airflow 2.11
#   VENV=.venv-lowest CONSTRAINTS=constraints-lowest.txt bash scripts/test.sh       # lowest direct deps
#   EXTRAS=dev bash scripts/setup.sh     # add the maintainer tools (each extra set keeps its own install stamp)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
CONSTRAINTS="${CONSTRAINTS:-constraints.txt}"
# The Airflow 3.3 environment (constraints.txt, the default) also gets the system tests' extra: the Celery
# provider and the PostgreSQL drivers. The Airflow 2.11 and lowest-bounds environments, which leave the system
# tests out, get only the test extra.
if [ "$CONSTRAINTS" = constraints.txt ]; then default_extras=test,system; else default_extras=test; fi
EXTRAS="${EXTRAS:-$default_extras}"
stamp="$VENV/.aoai-installed-${EXTRAS//,/-}"
want="$("$PYTHON" -c 'import hashlib, sys; print(hashlib.sha256(b"".join(open(f, "rb").read() for f in sys.argv[1:])).hexdigest())' pyproject.toml "$CONSTRAINTS")"
# A venv whose interpreter no longer starts (Python upgraded or removed) is rebuilt.
if [ -d "$VENV" ] && ! "$VENV/bin/python" -c "" 2>/dev/null; then
  echo "setup: $VENV is broken, recreating it" >&2
  rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  pip=("$VENV/bin/python" -m pip --disable-pip-version-check --quiet)
  "${pip[@]}" install --upgrade pip
  "${pip[@]}" install -c "$CONSTRAINTS" -e ".[$EXTRAS]"
  echo "$want" > "$stamp"
fi
