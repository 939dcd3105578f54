"""The import direction of DESIGN.md: core imports neither dagster nor bentoml; serving never
imports the Dagster definitions."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
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
