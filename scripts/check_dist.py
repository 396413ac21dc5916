"""Check what the built sdist and wheel contain: ``python scripts/check_dist.py DIST_DIR``.

The wheel is the package with its typing marker, licence files, entry points and metadata, and nothing else;
the sdist is complete enough to run the test suite (tests with conftest, vendored specs, example DAGs, the
docs the tests read).
"""

from __future__ import annotations

import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

WHEEL_MUST_HAVE = [
    "airflow_provider_aoai/__init__.py",
    "airflow_provider_aoai/py.typed",
    "airflow_provider_aoai/emulator/app.py",
    "licenses/LICENSE",
    "licenses/NOTICE",
    "entry_points.txt",
]
SDIST_MUST_HAVE = [
    "LICENSE",
    "NOTICE",
    "README.md",
    "docs/emulator.md",
    "pyproject.toml",
    "constraints-lowest.txt",
    "scripts/lowest_constraints.py",
    "airflow_provider_aoai/py.typed",
    "dags_examples/example_aoai_fine_tune.py",
    "tests/conftest.py",
    "tests/test_hooks.py",
    "tests/specs/LICENSE",
    "tests/specs/SOURCES.md",
    "tests/specs/azure-rest-api-specs/specification/cognitiveservices/data-plane/AzureOpenAI/authoring/"
    "stable/2024-10-21/examples/upload_file_complete.json",
]
NEVER = (".ci/", "benchmarks/", ".venv", "__pycache__", ".pyc", "dist-check/")


def check(dist: Path) -> list[str]:
    problems = []
    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")
    wheel_names = zipfile.ZipFile(wheel).namelist()
    with tarfile.open(sdist) as archive:
        root = archive.getnames()[0].split("/")[0]
        sdist_names = [name.removeprefix(f"{root}/") for name in archive.getnames()]

    for name in WHEEL_MUST_HAVE:
        if not any(n == name or n.endswith(f".dist-info/{name}") for n in wheel_names):
            problems.append(f"wheel lacks {name}")
    problems += [f"wheel has {n}" for n in wheel_names if n.startswith(("tests/", "dags_examples/"))]
    problems += [f"sdist lacks {name}" for name in SDIST_MUST_HAVE if name not in sdist_names]
    problems += [f"{kind} has {n}" for kind, names in (("wheel", wheel_names), ("sdist", sdist_names))
                 for n in names if any(part in n for part in NEVER)]  # fmt: skip

    (metadata_name,) = [n for n in wheel_names if n.endswith(".dist-info/METADATA")]
    metadata = Parser().parsestr(zipfile.ZipFile(wheel).read(metadata_name).decode())
    expected = {"License-Expression": "Apache-2.0", "Requires-Python": ">=3.11"}
    for key, value in expected.items():
        if metadata[key] != value:
            problems.append(f"METADATA {key}: {metadata[key]!r}, expected {value!r}")
    classifiers = metadata.get_all("Classifier") or []
    for minor in (11, 12, 13):
        if f"Programming Language :: Python :: 3.{minor}" not in classifiers:
            problems.append(f"METADATA lacks the Python 3.{minor} classifier")
    if "Typing :: Typed" not in classifiers:
        problems.append("METADATA lacks Typing :: Typed")
    if not metadata.get_all("Project-URL"):
        problems.append("METADATA has no Project-URL")
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in wheel_names if n.endswith("entry_points.txt")))
    for needed in (b"[apache_airflow_provider]", b"aoai-emulator"):
        if needed not in entry_points:
            problems.append(f"entry_points.txt lacks {needed.decode()}")
    print(f"{wheel.name}: {len(wheel_names)} files; {sdist.name}: {len(sdist_names)} files")
    return problems


if __name__ == "__main__":
    found = check(Path(sys.argv[1]))
    for problem in found:
        print(f"check_dist: {problem}", file=sys.stderr)
    sys.exit(1 if found else 0)
