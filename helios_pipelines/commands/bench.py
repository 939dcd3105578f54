"""`helios bench forecast|anomaly`: benchmarks on any CSV or NAB-format directory."""

import click

from helios_pipelines.benchmarks.anomaly import anomaly
from helios_pipelines.benchmarks.forecast import forecast


@click.group("bench")
def command() -> None:
    """Benchmarks on any CSV (forecast) or NAB-format directory (anomaly)."""


command.add_command(forecast)
command.add_command(anomaly)
