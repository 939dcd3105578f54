"""`helios bench forecast|forecast-suite|anomaly`: benchmarks on any CSV, the forecast suite, NAB."""

import click

from helios_pipelines.benchmarks.anomaly import anomaly
from helios_pipelines.benchmarks.forecast import forecast
from helios_pipelines.benchmarks.suite import forecast_suite


@click.group("bench")
def command() -> None:
    """Benchmarks on any CSV (forecast), over the forecast suite, or a NAB-format directory (anomaly)."""


command.add_command(forecast)
command.add_command(forecast_suite)
command.add_command(anomaly)
