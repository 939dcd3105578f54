"""`helios run` trains the tenants of the registry it was given (`--config-dir`), not the default one."""

from __future__ import annotations

from click.testing import CliRunner

from helios_pipelines.cli import main

SOLO = """id: solo
name: Only In This Registry
step: 5min
source: {type: files, path: %s}
metrics:
  load: {series: load, forecast: {horizons: [1h]}}
"""


def test_run_reads_the_tenant_registry_named_by_config_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("HELIOS_CONFIG_DIR", raising=False)
    registry = tmp_path / "tenants"
    registry.mkdir()
    missing = tmp_path / "absent.csv"
    (registry / "solo.yaml").write_text(SOLO % missing)

    result = CliRunner().invoke(main, ["--config-dir", str(registry), "run", "solo", "--no-bento"])

    # The pipeline found the tenant in that registry (its config asset succeeded) and failed where its
    # source is missing, naming it; with the default registry it would not know the tenant at all.
    assert result.exit_code != 0
    assert "pipeline failed for: solo" in result.output
    lines = {line.split()[1]: line for line in result.output.splitlines() if line.startswith("solo ")}
    assert " ok " in lines["tenant_config"]
    assert "FAILED" in lines["raw_metrics"]
    assert "absent.csv" in result.output.replace("\n", "")  # the terminal wraps the error after the step
