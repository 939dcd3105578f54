"""The import direction of DESIGN.md: core imports neither dagster nor bentoml; serving never
imports the Dagster definitions; only the store issues SQL."""

import ast
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


STORE = ROOT / "helios_pipelines/core/store"
# Alembic revisions describe the store's tables (DDL through ``op``), they issue no query.
MIGRATIONS = ROOT / "helios_pipelines/core/migrations"
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
    assert not offenders, "SQL belongs in helios_pipelines/core/store:\n" + "\n".join(sorted(offenders))
