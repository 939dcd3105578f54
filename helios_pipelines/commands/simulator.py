"""`helios simulator inject|incidents`: incidents in a simulated tenant's monitoring, for demos and drills."""

from __future__ import annotations

import click

from helios_pipelines.commands import tenant as load_tenant
from helios_pipelines.core.tenants.base import parse_duration


@click.group("simulator")
def command() -> None:
    """The built-in simulator's incidents (what the detector and the alerts should catch)."""


@command.command("inject")
@click.argument("tenant_id")
@click.option("--kind", required=True, help="outage, latency_spike, queue_spike, cpu_spike (gaming) or traffic_surge (ecommerce)")
@click.option("--ago", default="0m", show_default=True, help="start this long before now (e.g. 20m); or give --start")
@click.option("--start", default=None, help="start time (ISO 8601); overrides --ago")
@click.option("--minutes", type=click.IntRange(1, 24 * 60), default=20, show_default=True)
@click.option("--magnitude", type=float, default=5.0, show_default=True, help="factor the affected series moves by")
@click.pass_context
def inject(ctx: click.Context, tenant_id: str, kind: str, ago: str, start: str | None, minutes: int, magnitude: float) -> None:
    """Inject an incident; every reader of the tenant's simulated monitoring (pipeline, service) sees it."""
    import pandas as pd

    from helios_pipelines.core.sources.simulator import inject_incident

    tenant = load_tenant(ctx, tenant_id)
    try:
        at = pd.Timestamp(start) if start else pd.Timestamp.now(tz="UTC") - parse_duration(ago)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--start/--ago") from None
    try:
        incident = inject_incident(tenant, kind, at, minutes, magnitude)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{tenant_id}: {incident.kind} on {incident.metric} (x{incident.magnitude:g}) "
               f"from {incident.start.isoformat()} to {incident.end.isoformat()}")


@command.command("incidents")
@click.argument("tenant_id")
@click.option("--days", type=click.IntRange(1, 90), default=7, show_default=True)
@click.pass_context
def incidents(ctx: click.Context, tenant_id: str, days: int) -> None:
    """Every anomaly in the simulated monitoring over the last days: seeded and injected (ground truth)."""
    import pandas as pd

    from helios_pipelines.core.sources.simulator import Simulator

    tenant = load_tenant(ctx, tenant_id)
    if tenant.source.type != "simulator":
        raise click.ClickException(f"tenant '{tenant_id}' does not use the simulator source ({tenant.source.type})")
    now = pd.Timestamp.now(tz="UTC")
    found = Simulator(tenant).anomalies(now - pd.Timedelta(days=days), now)
    for anomaly in found:
        click.echo(f"{anomaly.start.isoformat()}  {anomaly.end.isoformat()}  {anomaly.kind:14} "
                   f"{anomaly.metric:22} x{anomaly.magnitude:.2f}")
    if not found:
        click.echo(f"no anomalies in the last {days} days")
