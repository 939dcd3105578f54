"""The import direction of DESIGN.md: core imports neither dagster nor bentoml; serving never
imports the Dagster definitions; only the store issues SQL."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path, with_names: bool = False) -> set[str]:
    """Modules imported; with ``with_names``, ``from m import n`` also gives ``m.n``."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            if with_names:
                names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("helios_pipelines/core", ("dagster", "bentoml", "helios_pipelines.defs", "serving", "helios_pipelines.definitions")),
        ("helios_pipelines/core/ml", ("helios_pipelines.core.ops",)),
        ("serving", ("dagster", "helios_pipelines.defs", "helios_pipelines.definitions")),
    ],
)
def test_import_direction(package, forbidden):
    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in _imports(path):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_importing_core_loads_neither_dagster_nor_bentoml():
    code = (
        "import sys, pkgutil, importlib, helios_pipelines.core as core\n"
        "for m in pkgutil.walk_packages(core.__path__, 'helios_pipelines.core.'): importlib.import_module(m.name)\n"
        "bad = [m for m in ('dagster', 'bentoml') if m in sys.modules]\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


STORE = ROOT / "helios_pipelines/core/ops/store"
# Alembic revisions describe the store's tables (DDL through ``op``), they issue no query.
MIGRATIONS = ROOT / "helios_pipelines/core/ops/migrations"
# Sessions, query builders, raw SQL and the errors of a write: whoever imports these talks SQL.
SQL = ("sqlalchemy.orm", "sqlalchemy.exc", "sqlalchemy.dialects", "sqlalchemy.sql",
       *(f"sqlalchemy.{name}" for name in ("select", "insert", "update", "delete", "text", "func", "exists")))


def test_only_the_store_package_issues_sql():
    offenders = []
    for package in ("helios_pipelines", "serving", "helios_sdk"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.is_relative_to(STORE) or path.is_relative_to(MIGRATIONS):
                continue
            for name in _imports(path, with_names=True):
                if any(name == f or name.startswith(f + ".") for f in SQL):
                    offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, "SQL belongs in helios_pipelines/core/ops/store:\n" + "\n".join(sorted(offenders))


def test_importing_the_dagster_definitions_writes_nothing_to_disk_or_the_environment(tmp_path):
    """`dagster dev` and every run worker import the definitions: the import reads configuration; it
    creates no HELIOS_HOME, no dagster.yaml and no environment variable. (scikit-learn sets its own
    KMP_* variables when imported: it is imported before the snapshot, so only Helios is judged.)"""
    home = tmp_path / "home"
    code = (
        "import os, json, sklearn\n"
        "before = dict(os.environ)\n"
        "import helios_pipelines.definitions\n"
        "print(json.dumps(sorted(k for k, v in os.environ.items() if before.get(k) != v)))\n"
    )
    env = {key: value for key, value in os.environ.items()
           if key not in ("DAGSTER_HOME", "BENTOML_HOME", "MLFLOW_TRACKING_URI", "OMP_WAIT_POLICY")}
    env |= {"HELIOS_HOME": str(home), "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
    assert list(tmp_path.iterdir()) == []


def test_the_service_declaration_loads_neither_pandas_nor_the_models_nor_the_store():
    """`bentoml serve` loads serving/service.py in its arbiter process too, which only supervises the
    worker: what serves (serving/host.py) is imported by the worker alone (#20.4's memory per service)."""
    code = (
        "import sys\n"
        "from bentoml._internal.configuration.containers import BentoMLContainer\n"
        "BentoMLContainer.bento_arguments.set({'tenants': 'arena'})\n"
        "from _bentoml_impl.loader import load\n"
        "load('serving.service:HeliosService', '.')\n"
        "heavy = ('pandas', 'numpy', 'sqlalchemy', 'xgboost', 'sklearn', 'helios_pipelines')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m == 'serving.host'))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                            env=os.environ | {"PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
