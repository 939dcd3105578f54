"""`helios report <tenant> --month YYYY-MM`: the month's events against a reactive HPA."""

from __future__ import annotations

import click

from helios_pipelines.commands import tenant as load_tenant


@click.command("report")
@click.argument("tenant_id")
@click.option("--month", required=True, help="calendar month, e.g. 2026-11")
@click.pass_context
def command(ctx: click.Context, tenant_id: str, month: str) -> None:
    """Pod-hours and cost saved and SLO minutes avoided over the month's scored events (in the Helios store)."""
    from helios_pipelines.commands.db import open_store
    from helios_pipelines.core.ops.scorecard_store import monthly_report

    tenant = load_tenant(ctx, tenant_id)
    store = open_store()
    try:
        report = monthly_report(store, tenant.id, month)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        store.close()
    click.echo(f"{tenant.id} · {report['month']} · {len(report['events'])} scored event(s)")
    for event in report["events"]:
        click.echo(f"  {event['start'][:16]} {event['event']:28} {event['pod_hours_saved']:+10,.1f} pod-hours "
                   f"{event['cost_saved']:+10,.2f} cost {event['slo_minutes_avoided']:+7,.0f} SLO min")
    click.echo(f"total: {report['pod_hours_saved']:+,.1f} pod-hours saved ({report['cost_saved']:+,.2f}), "
               f"{report['slo_minutes_avoided']:+,.0f} minutes above the capacity threshold avoided, "
               f"{report['under_pod_minutes_avoided']:+,.0f} under-provisioned pod-minutes avoided")
