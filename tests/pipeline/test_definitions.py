"""The Definitions as a newcomer meets them: `helios run` and `dagster dev` build them first."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_building_the_definitions_and_binding_every_job_prints_no_warning(tmp_path):
    """Issue #20.5: the demo printed Dagster's BetaWarning about a sensor parameter (``owners``) Helios
    never sets, raised by Dagster's own copy of each sensor when it binds the resources to its job."""
    code = (
        "import os\n"
        "from helios_pipelines.definitions import build_definitions\n"
        "definitions = build_definitions(dict(os.environ))\n"
        "definitions.resolve_job_def('tenant_training_job')\n"
        "print(sorted(sensor.name for sensor in definitions.get_repository_def().sensor_defs))\n"
    )
    env = dict(os.environ) | {"HELIOS_HOME": str(tmp_path / "home"), "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True, text=True,
                            cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert "event_end_sensor" in result.stdout
    assert "Warning" not in result.stderr, result.stderr
