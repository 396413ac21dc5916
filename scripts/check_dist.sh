#!/usr/bin/env bash
# Build the sdist and the wheel as a user would (python -m build), check what they contain, install the wheel
# into a bare virtualenv with Airflow 3.3, and run the sdist's tests against that install (the sdist's own
# copy of the package is removed first, so the wheel is what the tests import). Work dir: dist-check/.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
bash scripts/setup.sh
EXTRAS=dev bash scripts/setup.sh
out="$PWD/dist-check"
rm -rf "$out"
mkdir -p "$out"
.venv/bin/python -m build --outdir "$out/dist" . > "$out/build.log" 2>&1 || { tail -50 "$out/build.log"; exit 1; }
.venv/bin/python scripts/check_dist.py "$out/dist"

"$PYTHON" -m venv "$out/venv"
wheel=$(ls "$out"/dist/*.whl)
"$out/venv/bin/python" -m pip install --quiet --disable-pip-version-check -c constraints.txt "$wheel[test]"
"$out/venv/bin/airflow" providers get airflow-provider-aoai > /dev/null
echo "check_dist: the wheel installs, and Airflow lists the provider"

tar -xzf "$out"/dist/*.tar.gz -C "$out"
sdist=$(ls -d "$out"/airflow_provider_aoai-*/)
rm -rf "$sdist/airflow_provider_aoai"
cd "$sdist"
"$out/venv/bin/python" -m pytest -p no:cacheprovider -m "not system and not browser" "$@"
