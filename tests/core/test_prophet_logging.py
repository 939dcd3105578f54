"""A served Prophet model loads quietly: Prophet's plot module logs an ERROR when plotly is absent, and
the tenant service's log opened with it ("Importing plotly failed") though Helios draws no Prophet plot."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from helios_pipelines.core.ml.models.forecasters import make_forecaster

ROOT = Path(__file__).resolve().parents[2]


def test_loading_a_saved_prophet_forecaster_in_a_fresh_process_logs_no_error(tmp_path):
    index = pd.date_range("2026-11-17", periods=3 * 288, freq="5min", tz="UTC")
    load = pd.Series(100 + 30 * np.sin(2 * np.pi * np.arange(index.size) / 288), index=index)
    model_dir = make_forecaster("prophet", step="5min", max_horizon=12, metric="load").fit(load).save(tmp_path / "m")
    code = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stderr)\n"  # as a service's log would show it
        "from helios_pipelines.core.ml.models.base import SavableModel\n"
        f"print(type(SavableModel.load({str(model_dir)!r})).__name__)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ProphetForecaster"
    assert "ERROR" not in result.stderr, result.stderr
