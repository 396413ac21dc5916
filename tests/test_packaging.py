"""What pyproject.toml declares matches what the code needs and what CI tests (no install, no network)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

import airflow_provider_aoai
from tests.conftest import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
# The package that is imported: the clone's, or an installed wheel's when the sdist's tests run against it.
PACKAGE = Path(airflow_provider_aoai.__file__).parent
# Airflow 2's web server builds our connection form with these; wherever that code runs, they are there.
AIRFLOW2_WEBSERVER = {"flask_appbuilder", "flask_babel", "wtforms"}


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared(requirements: list[str]) -> set[str]:
    return {normalized(re.match(r"[A-Za-z0-9._-]+", r).group()) for r in requirements}


def distribution_of(module: str) -> str:
    """The distribution that provides an imported module (namespace packages resolved by their subpackage)."""
    parts = module.split(".")
    if parts[:4] == ["airflow", "providers", "common", "compat"]:
        return "apache-airflow-providers-common-compat"
    if parts[0] == "airflow":
        return "apache-airflow"
    if parts[0] == "azure":
        return f"azure-{parts[1]}"
    return normalized(packages_distributions()[parts[0]][0])


def imported_modules(path) -> set[str]:
    """Every absolute import of a module, also those inside functions (our heavy imports are lazy)."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module in ("azure", "airflow"):  # from azure import identity
                modules.update(f"{node.module}.{alias.name}" for alias in node.names)
            else:
                modules.add(node.module)
    return modules


@pytest.mark.parametrize(
    "path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE.parent))
)
def test_every_third_party_import_is_a_declared_dependency(path):
    allowed = declared(PROJECT["dependencies"])
    if "emulator" in path.parts:
        allowed |= declared(PROJECT["optional-dependencies"]["emulator"])
    if "lineage" in path.parts:  # imported only when Airflow's OpenLineage listener asks
        allowed |= declared(PROJECT["optional-dependencies"]["openlineage"])
    undeclared = {
        module
        for module in imported_modules(path)
        if module.split(".")[0] not in sys.stdlib_module_names
        and module.split(".")[0] not in AIRFLOW2_WEBSERVER | {"airflow_provider_aoai"}
        and distribution_of(module) not in allowed
    }
    assert not undeclared, f"{path.name} imports {sorted(undeclared)}: declare them in pyproject.toml"


def test_every_dependency_has_a_lower_bound_and_the_lowest_constraints_are_current():
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "lowest_constraints.py"), "--check"],
        check=False,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_lowest_constraints_pin_the_oldest_airflow_we_declare():
    pins = dict(
        line.split("==")
        for line in (REPO / "constraints-lowest.txt").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert pins["apache-airflow"] == "2.11.0"
    extras = PROJECT["optional-dependencies"]
    assert set(pins) == declared(PROJECT["dependencies"]) | declared(
        extras["emulator"] + extras["openlineage"] + extras["test"]
    ) - {"airflow-provider-aoai"}


def test_one_classifier_per_supported_python_version_from_the_lowest():
    lowest = re.fullmatch(r">=3\.(\d+)", PROJECT["requires-python"])
    assert lowest, PROJECT["requires-python"]
    minors = sorted(
        int(c.rsplit(".", 1)[1])
        for c in PROJECT["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    )
    assert minors[0] == int(lowest.group(1))
    assert minors == list(range(minors[0], minors[-1] + 1))


def test_the_package_is_typed_and_licensed():
    assert (PACKAGE / "py.typed").exists()
    assert "Apache License" in (REPO / "LICENSE").read_text()
    assert set(PROJECT["license-files"]) == {"LICENSE", "NOTICE"}
    assert PYPROJECT["tool"]["setuptools"]["package-data"]["airflow_provider_aoai"] == ["py.typed"]
