"""`helios run` trains the tenants of the registry it was given (`--config-dir`), not the default one."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from helios_pipelines.cli import main

MAKEFILE = Path(__file__).resolve().parents[2] / "Makefile"

SOLO = """id: solo
name: Only In This Registry
step: 5min
source: {type: files, path: %s}
metrics:
  load: {series: load, forecast: {horizons: [1h]}}
"""


def run_solo(tmp_path, monkeypatch):
    """`helios run` of a tenant whose source file is missing: it fails at raw_metrics, in seconds."""
    monkeypatch.delenv("HELIOS_CONFIG_DIR", raising=False)
    registry = tmp_path / "tenants"
    registry.mkdir()
    (registry / "solo.yaml").write_text(SOLO % (tmp_path / "absent.csv"))
    return CliRunner().invoke(main, ["--config-dir", str(registry), "run", "solo", "--no-bento"])


def test_run_reads_the_tenant_registry_named_by_config_dir(tmp_path, monkeypatch):
    result = run_solo(tmp_path, monkeypatch)

    # The pipeline found the tenant in that registry (its config asset succeeded) and failed where its
    # source is missing, naming it; with the default registry it would not know the tenant at all.
    assert result.exit_code != 0
    assert "pipeline failed for: solo" in result.output
    lines = {line.split()[1]: line for line in result.output.splitlines() if line.startswith("solo ")}
    assert " ok " in lines["tenant_config"]
    assert "FAILED" in lines["raw_metrics"]
    assert "absent.csv" in result.output.replace("\n", "")  # the terminal wraps the error after the step


def test_the_commands_a_run_points_to_exist(tmp_path, monkeypatch):
    """Its first line pointed to the Dagster UI with `helios ui`, which no command answers."""
    output = run_solo(tmp_path, monkeypatch).output
    helios = re.findall(r"\bhelios ([a-z][a-z-]*)", output)
    make = re.findall(r"\bmake ([a-z][a-z-]*)", output)
    assert helios or make, output
    assert [c for c in helios if c not in main.commands] == []
    targets = set(re.findall(r"^([a-z][a-z-]*):", MAKEFILE.read_text(), re.MULTILINE))
    assert [t for t in make if t not in targets] == []
