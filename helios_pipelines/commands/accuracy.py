"""`helios accuracy <tenant>`: live accuracy of the served forecasts, from recorded predictions."""

from __future__ import annotations

import click

from helios_pipelines.commands import tenant as load_tenant
from helios_pipelines.commands.db import open_store
from helios_pipelines.core.tenants.base import format_horizon, parse_duration


def _fmt(value: float | None, pattern: str) -> str:
    return "-" if value is None else format(value, pattern)


@click.command("accuracy")
@click.argument("tenant_id")
@click.option("--window", default="1d", show_default=True, help="length of each window (e.g. 6h, 1d)")
@click.option("--windows", type=click.IntRange(1, 90), default=7, show_default=True, help="how many windows back")
@click.option("--no-join", is_flag=True, help="skip fetching actuals from the tenant's source first")
@click.option("--as-of", default=None, help="end of the last window (ISO time); default: now")
@click.pass_context
def command(ctx: click.Context, tenant_id: str, window: str, windows: int, no_join: bool, as_of: str | None) -> None:
    """Join actuals from the tenant's source, then print MAE, MASE and 80% interval coverage per metric,
    horizon and window (MASE below 1 beats the one-day seasonal-naive forecast; coverage should be ~0.80)."""
    import pandas as pd

    from helios_pipelines.core.ops.feedback import join_actuals, live_accuracy
    from helios_pipelines.core.ops.store import StoreError
    from helios_pipelines.core.sources import SourceError, make_source

    tenant = load_tenant(ctx, tenant_id)
    try:
        length = parse_duration(window)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--window") from None
    now = pd.Timestamp(as_of) if as_of else pd.Timestamp.now(tz="UTC")
    now = (now.tz_localize("UTC") if now.tzinfo is None else now.tz_convert("UTC")).to_pydatetime()
    store = open_store()
    try:
        if not no_join:
            joined = join_actuals(store, make_source(tenant, now=pd.Timestamp(now)), tenant, now)
            click.echo(f"joined {joined} actuals from the {tenant.source.type} source")
        rows = live_accuracy(store, tenant_id, length, windows, now)
    except (StoreError, SourceError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        store.close()
    if not rows:
        click.echo(f"no predictions of '{tenant_id}' with a known actual in the last {windows} x {window}")
        return
    click.echo(f"{'window (UTC)':19} {'metric':22} {'horizon':>7} {'n':>6} {'MAE':>12} {'MASE':>6} {'coverage':>8}")
    for row in rows:
        click.echo(
            f"{row.window_start:%Y-%m-%d %H:%M}    {row.metric:22} {format_horizon(row.horizon_minutes):>7} "
            f"{row.count:>6} {row.mae:>12.4g} {_fmt(row.mase, '.3f'):>6} {_fmt(row.coverage, '.2f'):>8}"
        )
