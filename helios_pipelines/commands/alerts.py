"""`helios alerts deliver|receive|list`: the alert outbox, its delivery worker, and a local receiver."""

from __future__ import annotations

import logging
import signal
import threading
from datetime import timedelta

import click

from helios_pipelines.commands.db import open_store


@click.group("alerts")
def command() -> None:
    """Alerts waiting in, delivered from, or dead in the outbox."""


@command.command("deliver")
@click.option("--loop", is_flag=True, help="keep delivering until interrupted (default: deliver what is due, once)")
@click.option("--interval", type=float, default=5.0, show_default=True, help="seconds between polls with --loop")
@click.option("--max-attempts", type=click.IntRange(1, 100), default=8, show_default=True)
@click.option("--base-delay", type=float, default=10.0, show_default=True, help="first retry delay, seconds")
@click.option("--max-delay", type=float, default=3600.0, show_default=True, help="longest retry delay, seconds")
@click.option("--timeout", type=float, default=10.0, show_default=True, help="per request, seconds")
@click.option("--lease", type=float, default=60.0, show_default=True,
              help="seconds a claimed alert stays reserved; a killed worker's alerts are retried after it")
@click.option("--retention/--no-retention", default=False,
              help="with --loop, also apply the plans' retention once an hour")
def deliver(loop: bool, interval: float, max_attempts: int, base_delay: float, max_delay: float, timeout: float,
            lease: float, retention: bool) -> None:
    """Post due alerts to Slack, PagerDuty and webhooks, with retries, backoff and a dead-letter state."""
    from helios_pipelines.core.ops.alerts import DeliveryWorker, RetryPolicy

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)  # opening the store checks its migrations: not the worker's news
    policy = RetryPolicy(max_attempts, timedelta(seconds=base_delay), timedelta(seconds=max_delay))
    store = open_store()
    try:
        worker = DeliveryWorker(store, policy, timeout=timeout, lease=timedelta(seconds=lease))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--lease") from None
    try:
        if not loop:
            click.echo(str(worker.run_once()))
            return
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        retention_stop = threading.Event()
        if retention:
            threading.Thread(target=_retention_loop, args=(store, retention_stop), daemon=True).start()
        try:
            worker.run(interval, stop)
        except KeyboardInterrupt:
            pass
        finally:
            retention_stop.set()
    finally:
        worker.close()
        store.close()


def _retention_loop(store, stop: threading.Event) -> None:
    while not stop.is_set():
        store.apply_retention()
        stop.wait(3600)


@command.command("receive")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=9009, show_default=True)
@click.option("--secret-env", default="HELIOS_WEBHOOK_SECRET", show_default=True,
              help="environment variable holding the webhook's signing secret (the tenant's secret_env)")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="JSON-lines file of accepted alerts (default: $HELIOS_HOME/received-alerts.jsonl, "
                   "received-<kind>.jsonl for slack and pagerduty)")
@click.option("--kind", type=click.Choice(["webhook", "slack", "pagerduty"]), default="webhook", show_default=True,
              help="webhook: Helios' signed JSON; slack / pagerduty: accept only that vendor's documented payload")
def receive(host: str, port: int, secret_env: str, out: str | None, kind: str) -> None:
    """A local receiver: generic webhook alerts (verifies each signature, acts on each alert once), or a
    stand-in for Slack's incoming webhook or PagerDuty's Events API v2 that refuses anything else.
    Prints each accepted alert and appends it to a file."""
    import os
    from pathlib import Path

    from helios_pipelines.core.ops.alert_receiver import AlertReceiver
    from helios_pipelines.core.settings import helios_home

    secret = os.environ.get(secret_env) if kind == "webhook" else None
    if kind == "webhook" and not secret:
        raise click.ClickException(f"environment variable {secret_env} (the signing secret) is not set")

    def show(entry: dict) -> None:
        alert = entry["alert"]
        if kind == "slack":
            click.echo(f"{entry['received_at']} slack message: {alert.get('text')}")
        elif kind == "pagerduty":
            summary = (alert.get("payload") or {}).get("summary", "")
            click.echo(f"{entry['received_at']} pagerduty {alert.get('event_action')} {alert.get('dedup_key')}: {summary}")
        else:
            click.echo(f"{entry['received_at']} signed alert: [{alert.get('tenant')}] {alert.get('event')} "
                       f"{alert.get('action')}: {alert.get('summary')}")

    default = "received-alerts.jsonl" if kind == "webhook" else f"received-{kind}.jsonl"
    path = Path(out) if out else helios_home() / default
    receiver = AlertReceiver(secret, path, host, port, on_alert=show, kind=kind)
    click.echo(f"receiving {kind} alerts on {receiver.url} -> {path}")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with receiver:
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass


@command.command("list")
@click.option("--tenant", "tenant_id", default=None)
@click.option("--status", type=click.Choice(["pending", "delivered", "dead"]), default=None)
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
def alerts_list(tenant_id: str | None, status: str | None, limit: int) -> None:
    """Outbox rows, newest first: state, attempts, destination, last error."""
    from helios_pipelines.core.ops.store import StoreError

    store = open_store()
    try:
        rows = store.outbox_rows(tenant_id, status, limit)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        store.close()
    for tenant, row in rows:
        click.echo(f"{row.id:>6} {tenant:14} {row.status:9} x{row.attempts:<2} {row.event:18} {row.action:8} "
                   f"-> {row.destination} ({row.destination_type}) {row.last_error or ''}")
    if not rows:
        click.echo("no alerts")


if __name__ == "__main__":
    # `python -m helios_pipelines.commands.alerts deliver --loop`: the worker as a process of its own
    # (a sidecar), without importing every other command the `helios` entry point mounts.
    command()
