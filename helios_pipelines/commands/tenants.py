"""`helios tenants list|add|show|sync|rotate-key|disable|enable`: the tenant registry and the store.

The YAML registry is the source of truth for configuration; the store holds keys, status and history
(see ``helios_pipelines.core.ops.store``). `add` writes both or neither; `sync` copies the registry into
the store. A tenant file added here becomes a Dagster partition through the registry sensor.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import click
import yaml

from helios_pipelines.commands import registry
from helios_pipelines.commands import tenant as load_tenant
from helios_pipelines.commands.db import open_store
from helios_pipelines.core.tenants import DEFAULT_CONFIG_DIR, TenantConfigError, parse_tenant_file
from helios_pipelines.core.tenants.base import parse_duration

PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
ALL_EVENTS = ["anomaly_detected", "scaling_recommended", "capacity_warning", "capacity_critical"]


@contextlib.contextmanager
def _clear_errors():
    """Domain errors of the store and plans become one-line CLI errors."""
    from helios_pipelines.core.ops.plans import PlanLimitError
    from helios_pipelines.core.ops.store import StoreError

    try:
        yield
    except (StoreError, PlanLimitError, TenantConfigError) as exc:
        raise click.ClickException(str(exc)) from None


@click.group("tenants")
def command() -> None:
    """The tenant registry (configs/tenants) and the tenants' state in the store."""


@command.command("list")
@click.pass_context
def tenants_list(ctx: click.Context) -> None:
    """One line per tenant; invalid files are listed with their errors."""
    found = registry(ctx)
    for tenant in found.tenants.values():
        forecast = ", ".join(tenant.forecast_metrics)
        click.echo(f"{tenant.id:16} {tenant.plan:10} source={tenant.source.type:10} step={tenant.step:6} forecast: {forecast}")
    for error in found.errors:
        click.echo(f"INVALID {error}", err=True)


def _config_dir(ctx: click.Context) -> Path:
    return Path(ctx.find_root().obj["config_dir"] or DEFAULT_CONFIG_DIR)


def _refuse_secret(replacement: str):
    """A flag that used to take a secret's value: refused with the way to name it instead."""

    def refuse(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
        if value is not None:
            raise click.UsageError(
                f"--{param.name.removeprefix('refused_').replace('_', '-')} would write a secret into the tenant "
                f"file; export it as an environment variable (of the service and the alert worker) and pass "
                f"{replacement} NAME", ctx)

    return refuse


def _webhooks(slack_url_env, pagerduty_url, routing_key_env, webhook_url, secret_env) -> list[dict]:
    hooks = []
    if slack_url_env:
        hooks.append({"name": "slack", "type": "slack", "url_env": slack_url_env, "events": ALL_EVENTS})
    if pagerduty_url or routing_key_env:
        hooks.append({"name": "pagerduty", "type": "pagerduty", "url": pagerduty_url or PAGERDUTY_EVENTS_URL,
                      "routing_key_env": routing_key_env, "events": ["anomaly_detected", "capacity_critical"]})
    if webhook_url:
        hooks.append({"name": "webhook", "type": "webhook", "url": webhook_url, "secret_env": secret_env,
                      "events": ALL_EVENTS})
    return hooks


def _from_template(config_dir: Path, tenant_id: str, name: str, plan: str, seed: int, webhooks: list[dict]) -> dict:
    template = config_dir / "_template.yaml"
    raw = yaml.safe_load((template if template.exists() else DEFAULT_CONFIG_DIR / "_template.yaml").read_text())
    raw.update(id=tenant_id, name=name, plan=plan)
    raw["source"]["seed"] = seed
    raw["alerts"]["webhooks"] = webhooks
    if plan == "starter":
        # The template watches metrics for anomalies; the starter plan has no anomaly detection.
        for metric in raw["metrics"].values():
            metric["anomaly"] = False
    return raw


@command.command("add")
@click.argument("tenant_id")
@click.option("--name", required=True, help="display name")
@click.option("--plan", type=click.Choice(["starter", "pro", "enterprise"]), default="pro", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="simulator seed of the template's source")
@click.option("--slack-url-env", default=None, metavar="NAME",
              help="environment variable holding the Slack incoming-webhook URL (the URL is a secret)")
@click.option("--pagerduty-url", default=None, help=f"PagerDuty Events API v2 URL (default {PAGERDUTY_EVENTS_URL})")
@click.option("--pagerduty-routing-key-env", "routing_key_env", default=None, metavar="NAME",
              help="environment variable holding the PagerDuty integration (routing) key")
@click.option("--slack-url", "refused_slack_url", default=None, hidden=True, callback=_refuse_secret("--slack-url-env"))
@click.option("--pagerduty-routing-key", "refused_routing_key", default=None, hidden=True,
              callback=_refuse_secret("--pagerduty-routing-key-env"))
@click.option("--webhook-url", default=None, help="generic JSON webhook, signed when --webhook-secret-env is given")
@click.option("--webhook-secret-env", "secret_env", default=None, help="environment variable holding the HMAC secret")
@click.pass_context
def add(ctx: click.Context, tenant_id: str, name: str, plan: str, seed: int, slack_url_env, pagerduty_url,
        routing_key_env, refused_slack_url, refused_routing_key, webhook_url, secret_env) -> None:
    """Write configs/tenants/<id>.yaml from the template and the tenant's store row, or neither.

    Prints the tenant's first API key, which is shown only once. Secrets (a Slack URL, a PagerDuty
    routing key) are named by the environment variable that holds them, never written to the file.
    """
    config_dir = _config_dir(ctx)
    final = config_dir / f"{tenant_id}.yaml"
    if final.exists():
        raise click.ClickException(f"tenant '{tenant_id}' already exists: {final}")
    raw = _from_template(config_dir, tenant_id, name, plan, seed,
                         _webhooks(slack_url_env, pagerduty_url, routing_key_env, webhook_url, secret_env))
    # Staged inside the config directory (a hidden folder the registry does not read) so the final
    # link is on the same filesystem, and validated by the same parser that will load it.
    staging = Path(tempfile.mkdtemp(prefix=".adding-", dir=config_dir))
    placed = False
    try:
        staged = staging / final.name
        staged.write_text("# Added by `helios tenants add`; every key is documented in _template.yaml.\n"
                          + yaml.safe_dump(raw, sort_keys=False))
        with _clear_errors():
            tenant = parse_tenant_file(staged)
            store = open_store()
            try:
                with store.transaction() as session:
                    _, key = store.add_customer(session, tenant)
                    os.link(staged, final)  # fails rather than overwrite a file that appeared meanwhile
                    placed = True
            finally:
                store.close()
    except BaseException:
        if placed:
            final.unlink()
        raise
    finally:
        shutil.rmtree(staging)
    click.echo(f"added tenant '{tenant_id}' ({plan}): {final}")
    click.echo(f"API key (shown once, store it now): {key}")


@command.command("show")
@click.argument("tenant_id")
@click.pass_context
def show(ctx: click.Context, tenant_id: str) -> None:
    """The tenant's configuration summary and its state in the store."""
    from helios_pipelines.core.ops.plans import violations
    from helios_pipelines.core.ops.store.schema import utcnow

    found = registry(ctx)
    tenant = found.tenants.get(tenant_id)
    store = open_store()
    try:
        with _clear_errors():
            summary = store.customer_summary(tenant_id)
            customer = summary.customer if summary else None
            if tenant is None and customer is None:
                load_tenant(ctx, tenant_id)  # the registry's error: unknown, or which keys are invalid
            if tenant is not None:
                click.echo(f"{tenant.id}: {tenant.name}")
                click.echo(f"  config     plan={tenant.plan} source={tenant.source.type} step={tenant.step} "
                           f"metrics={len(tenant.metrics)} webhooks={', '.join(w.name for w in tenant.alerts.webhooks) or '-'}")
                for problem in violations(tenant, customer.plan if customer else None):
                    click.echo(f"  OVER PLAN  {problem}")
            else:
                broken = [e for e in found.errors if e.path.stem == tenant_id]
                click.echo(f"{tenant_id}: " + (f"config INVALID {broken[0]}" if broken else "no file in the registry"))
            if customer is None:
                click.echo("  store      not in the store (run `helios tenants sync`)")
                return
            now = utcnow()
            click.echo(f"  store      plan={customer.plan} status={customer.status} since={customer.created_at:%Y-%m-%d}")
            for key in summary.keys:
                state = "valid" if key.valid_at(now) else ("revoked" if key.revoked_at else "expired")
                until = f" until {key.expires_at:%Y-%m-%d %H:%M}Z" if key.expires_at and key.valid_at(now) else ""
                click.echo(f"  api key    hel_{key.prefix}_…  created {key.created_at:%Y-%m-%d %H:%M}Z  {state}{until}")
            click.echo(f"  history    predictions={summary.predictions} open anomalies={summary.open_anomalies}")
        outbox = store.outbox_counts(tenant_id)
        click.echo("  alerts     " + (", ".join(f"{s}={n}" for s, n in sorted(outbox.items())) or "none"))
    finally:
        store.close()


@command.command("sync")
@click.pass_context
def sync(ctx: click.Context) -> None:
    """Copy the registry's tenants (name, plan, metrics) into the store; report drift and plan overruns."""
    store = open_store()
    try:
        report = store.sync_customers(registry(ctx))
    finally:
        store.close()
    for label, ids in (("added", report.added), ("updated", report.updated), ("unchanged", report.unchanged),
                       ("only in the store", report.only_in_store)):
        if ids:
            click.echo(f"{label:18} {', '.join(ids)}")
    for problem in report.plan_violations:
        click.echo(f"OVER PLAN          {problem}", err=True)


@command.command("rotate-key")
@click.argument("tenant_id")
@click.option("--grace", default="24h", show_default=True, help="how long the old keys stay valid (e.g. 1h, 2d)")
@click.option("--revoke-old", is_flag=True, help="revoke the old keys at once (a leaked key)")
def rotate_key(tenant_id: str, grace: str, revoke_old: bool) -> None:
    """Issue a new API key; the old ones expire after the grace period (or at once)."""
    from datetime import timedelta

    try:
        period = timedelta(0) if revoke_old else parse_duration(grace)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--grace") from None
    store = open_store()
    try:
        with _clear_errors():
            key = store.rotate_key(tenant_id, period)
    finally:
        store.close()
    old = "revoked" if period <= timedelta(0) else f"valid for {grace} more"
    click.echo(f"new API key for '{tenant_id}' (shown once, store it now): {key}")
    click.echo(f"previous keys: {old}")


def _set_status(tenant_id: str, status: str) -> None:
    store = open_store()
    try:
        with _clear_errors():
            store.set_status(tenant_id, status)
    finally:
        store.close()
    click.echo(f"tenant '{tenant_id}' is {status}")


@command.command("disable")
@click.argument("tenant_id")
def disable(tenant_id: str) -> None:
    """Refuse the tenant's API keys and stop its alerts and anomaly recording; history is kept."""
    from helios_pipelines.core.ops.store.schema import DISABLED

    _set_status(tenant_id, DISABLED)


@command.command("enable")
@click.argument("tenant_id")
def enable(tenant_id: str) -> None:
    """Undo `disable`."""
    from helios_pipelines.core.ops.store.schema import ACTIVE

    _set_status(tenant_id, ACTIVE)
