"""`helios sources check <tenant>`: can Helios read this tenant's metrics, and how well covered are they?"""

import sys

import click
import pandas as pd

from helios_pipelines.commands import tenant as load_tenant


@click.group("sources")
def command() -> None:
    """The tenants' metric sources."""


@command.command("check")
@click.argument("tenant_id")
@click.option("--days", type=float, default=None, help="window to check (default: the tenant's training window)")
@click.option("--as-of", default=None, help="end of the window (ISO time); default: now")
@click.pass_context
def check(ctx: click.Context, tenant_id: str, days: float | None, as_of: str | None) -> None:
    """Connect, list which configured metrics exist, their coverage and gaps; exit 1 on problems."""
    from helios_pipelines.core.sources.check import check_source, format_report

    tenant = load_tenant(ctx, tenant_id)
    end = pd.Timestamp(as_of) if as_of else pd.Timestamp.now(tz="UTC")
    end = (end.tz_localize("UTC") if end.tzinfo is None else end).floor(tenant.step_timedelta)
    start = end - pd.Timedelta(days=days if days is not None else tenant.training.history_days)
    report = check_source(tenant, start, end)
    click.echo(format_report(report))
    if not report.ok:
        sys.exit(1)
