"""`helios anomalies list|ack|feedback`: recorded anomaly episodes and operators' verdicts on them."""

from __future__ import annotations

import getpass

import click

from helios_pipelines.commands.db import open_store


@click.group("anomalies")
def command() -> None:
    """Anomaly episodes recorded from /detect and scheduled detection."""


@command.command("list")
@click.argument("tenant_id", required=False)
@click.option("--open", "open_only", is_flag=True, help="only episodes still in progress")
@click.option("--unacknowledged", is_flag=True, help="only episodes nobody has acknowledged")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
def anomalies_list(tenant_id: str | None, open_only: bool, unacknowledged: bool, limit: int) -> None:
    """Newest first: id, tenant, metric, when, peak score, state, description."""
    from helios_pipelines.core.ops.store import StoreError

    store = open_store()
    try:
        found = store.list_anomalies(tenant_id, open_only, unacknowledged, limit)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        store.close()
    if not found:
        click.echo("no anomalies")
    for tenant, anomaly in found:
        state = "open" if anomaly.resolved_at is None else f"resolved {anomaly.resolved_at:%m-%d %H:%M}"
        ack = f"acked by {anomaly.acknowledged_by}" if anomaly.acknowledged else "unacked"
        click.echo(f"{anomaly.id:>6} {tenant:14} {anomaly.metric_name:20} {anomaly.detected_at:%Y-%m-%d %H:%M}Z "
                   f"score {anomaly.anomaly_score:.2f}  {state:18} {ack}  {anomaly.description or ''}")


@command.command("ack")
@click.argument("anomaly_ids", type=int, nargs=-1, required=True)
@click.option("--by", default=None, help="who acknowledges (default: the current user)")
@click.option("--tenant", "tenant_id", default=None, help="refuse ids that are not this tenant's")
def ack(anomaly_ids: tuple[int, ...], by: str | None, tenant_id: str | None) -> None:
    """Acknowledge anomalies by id."""
    from helios_pipelines.core.ops.store import StoreError

    store = open_store()
    try:
        for anomaly_id in anomaly_ids:
            anomaly = store.acknowledge_anomaly(anomaly_id, by or getpass.getuser(), tenant_id)
            click.echo(f"acknowledged {anomaly.id} ({anomaly.metric_name}) by {anomaly.acknowledged_by}")
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        store.close()


@command.command("feedback")
@click.argument("tenant_id")
@click.argument("episode_id", type=int)
@click.option("--not-an-incident", "verdict", flag_value="not_an_incident",
              help="the episode should not have fired: the next training raises its metrics' thresholds")
@click.option("--incident", "verdict", flag_value="incident",
              help="a real incident: the next training keeps it firing")
@click.option("--by", default=None, help="who gives the verdict (default: the current user)")
@click.option("--note", default=None, help="why, for the record")
def feedback(tenant_id: str, episode_id: int, verdict: str | None, by: str | None, note: str | None) -> None:
    """Record an operator's verdict on one of TENANT_ID's episodes (a later verdict replaces it)."""
    from helios_pipelines.core.ops.store import StoreError

    if verdict is None:
        raise click.UsageError("give the verdict: --not-an-incident or --incident")
    store = open_store()
    try:
        stored = store.record_verdict(tenant_id, episode_id, verdict, by or getpass.getuser(), note)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        store.close()
    click.echo(f"episode {stored.anomaly_id} of {tenant_id}: {stored.verdict.replace('_', ' ')} (by {stored.given_by}); "
               "the next training run of its detector uses it")
