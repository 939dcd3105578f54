"""`helios events scorecard <tenant> [<event>]`: what an event's forecasts and replicas were worth;
`helios events peaks <tenant>`: the recurring peaks Helios learned, which it scores like events;
`helios events annotate <tenant>`: a deploy or scaling action, as `POST /annotations` reports it."""

from __future__ import annotations

import os

import click

from helios_pipelines.commands import tenant as load_tenant


@click.group("events")
def command() -> None:
    """Scheduled events and learned peaks: their scorecards once they are over; reported changes."""


def _now(as_of: str | None):
    import pandas as pd

    raw = as_of or os.environ.get("HELIOS_AS_OF")
    now = pd.Timestamp(raw) if raw else pd.Timestamp.now(tz="UTC")
    return now.tz_localize("UTC") if now.tzinfo is None else now.tz_convert("UTC")


def format_scorecard(card) -> str:
    """The scorecard as the terminal shows it: forecast quality, then Helios vs a reactive HPA."""
    f, h, r, s = card.forecast, card.helios, card.reactive, card.savings
    rows = [
        ("under-provisioned pod-minutes", h.under_provisioned_pod_minutes, r.under_provisioned_pod_minutes),
        ("over-provisioned pod-minutes", h.over_provisioned_pod_minutes, r.over_provisioned_pod_minutes),
        (f"minutes above {card.threshold_utilization:.0%} utilisation", h.minutes_above_threshold, r.minutes_above_threshold),
        ("pod-hours", h.pod_hours, r.pod_hours),
        (f"cost at {card.price_per_pod_hour:g} per pod-hour", h.cost, r.cost),
    ]
    lines = [
        f"{card.tenant} · {card.event} ({card.kind}) · {card.start[:16]} - {card.end[:16]} UTC · {card.service} on {card.metric}",
        f"lead time {card.lead_minutes} min · capacity per replica {card.capacity_per_replica:.4g} ({card.capacity_source})"
        f" · forecasts replayed every {card.origin_every_steps} step(s)",
        *(f"scored with the {what} Helios had before the event: {which}" for what, which in card.scored_with.items()),
        f"forecast {card.lead_minutes} min ahead: MAE {f['mae']:,.1f} · MASE {f['mase']:.2f} · peak error {f['peak_error']:+.1%}"
        f" · peak timing {f['timing_error_minutes']:+.0f} min · 80% interval coverage {f['coverage']:.0%}",
        f"{'':38}{'Helios':>12}{'reactive HPA':>14}",
        *(f"{name:38}{ours:>12,.1f}{theirs:>14,.1f}" for name, ours, theirs in rows),
        f"saved vs reactive: {s['pod_hours_saved']:+,.1f} pod-hours ({s['cost_saved']:+,.2f}), "
        f"{s['slo_minutes_avoided']:+,.0f} minutes above threshold avoided, "
        f"{s['under_pod_minutes_avoided']:+,.0f} under-provisioned pod-minutes avoided",
    ]
    return "\n".join(lines)


@command.command("scorecard")
@click.argument("tenant_id")
@click.argument("event", required=False)
@click.option("--as-of", default=None, help="the clock (default: HELIOS_AS_OF, else now)")
@click.option("--service", default=None, help="scaling target (default: the tenant's first)")
@click.option("--rescore", is_flag=True, help="score again even when the scorecard is stored")
@click.option("--no-mlflow", is_flag=True, help="do not log the scorecard as an MLflow run")
@click.option("--no-alert", is_flag=True, help="do not send the summary line to the alert channels")
@click.pass_context
def scorecard(ctx: click.Context, tenant_id: str, event: str | None, as_of: str | None, service: str | None,
              rescore: bool, no_mlflow: bool, no_alert: bool) -> None:
    """Print EVENT's scorecard (the last finished event without EVENT, the YAML's, one posted to the
    service or a learned recurring peak, e.g. "learned peak Sat 09:00"), scoring it and storing it in
    the Helios store first when needed: forecast vs actual, replicas vs needed, pod-minutes, cost,
    against a reactive HPA."""
    from helios_pipelines.commands.db import open_store
    from helios_pipelines.core.ml.tracking import Tracker
    from helios_pipelines.core.ops import scorecard_store
    from helios_pipelines.core.ops.scorecard import UnfinishedEventError, UnknownEventError, find_occurrence
    from helios_pipelines.core.ops.store import UnknownCustomerError
    from helios_pipelines.core.sources import make_source

    tenant = load_tenant(ctx, tenant_id)
    if not tenant.scaling:
        raise click.ClickException(f"tenant '{tenant.id}' has no scaling targets: nothing to score")
    now = _now(as_of)
    tracker = Tracker()
    store = open_store()
    try:
        try:
            occurrence = find_occurrence(tenant, event, now, scorecard_store.posted_events(store, tenant.id),
                                         scorecard_store.learned_schedule(tracker, tenant.id))
        except (UnknownEventError, UnfinishedEventError) as exc:
            raise click.ClickException(str(exc)) from None
        card = None if rescore else scorecard_store.stored(store, tenant, occurrence, service)
        if card is None:
            with click.progressbar(length=1, label=f"replaying {occurrence.name}", file=click.get_text_stream("stderr")) as bar:
                def progress(done: int, total: int) -> None:
                    bar.length = total
                    bar.update(done - bar.pos)

                try:
                    published = scorecard_store.score_event(tenant, occurrence.name, now, make_source(tenant, now=now),
                                                            tracker, store, service, not no_mlflow, not no_alert, progress)
                except (scorecard_store.ScorecardUnavailableError, UnknownCustomerError) as exc:
                    raise click.ClickException(str(exc)) from None
            card = published.card
            if published.mlflow_run:
                click.echo(f"MLflow run {published.mlflow_run} (plot: scorecard.png)", err=True)
            if published.channels is not None:
                click.echo(f"summary queued for {published.channels} alert channel(s)", err=True)
            elif published.alert_error:
                click.echo(f"summary not queued: {published.alert_error}", err=True)
    finally:
        store.close()
    click.echo(format_scorecard(card))


@command.command("peaks")
@click.argument("tenant_id")
@click.option("--as-of", default=None, help="the clock (default: HELIOS_AS_OF, else now)")
@click.pass_context
def peaks(ctx: click.Context, tenant_id: str, as_of: str | None) -> None:
    """The recurring peaks TENANT's champion planner learned (or why it learned none) and their
    occurrences of the last week that no scheduled event covers: the names `helios events scorecard`
    and GET /events/<name>/scorecard take."""
    from helios_pipelines.commands.db import open_store
    from helios_pipelines.core.ml.events import EventSchedule
    from helios_pipelines.core.ml.tracking import Tracker
    from helios_pipelines.core.ops import scorecard_store
    from helios_pipelines.core.ops.scorecard import LEARNED_LOOKBACK

    tenant = load_tenant(ctx, tenant_id)
    learned = scorecard_store.learned_schedule(Tracker(), tenant.id)
    if learned is None:
        raise click.ClickException(f"tenant '{tenant.id}' has no champion planner yet: `helios run {tenant.id}` learns its peaks")
    click.echo(learned.note)
    now = _now(as_of)
    store = open_store()
    try:
        posted = scorecard_store.posted_events(store, tenant.id)
    finally:
        store.close()
    for occurrence in learned.occurrences(now - LEARNED_LOOKBACK, now, EventSchedule([*tenant.events, *posted])):
        click.echo(f"  {occurrence.name}: {occurrence.start:%Y-%m-%d %H:%M} - {occurrence.end:%H:%M} UTC")


@command.command("annotate")
@click.argument("tenant_id")
@click.option("--time", "time_", required=True, help="when the change started: ISO 8601 or epoch milliseconds")
@click.option("--end", default=None, help="when it ended (default: the detector's level window, 20 steps by default)")
@click.option("--kind", type=click.Choice(["deploy", "scale"]), default=None,
              help="default: scale when a --tag says so, else deploy")
@click.option("--text", default="", help="what changed, e.g. 'checkout v2.3'")
@click.option("--tag", "tags", multiple=True, help="Grafana's tags (repeatable)")
@click.option("--metric", "metrics", multiple=True, help="a metric it moves (repeatable; default: all)")
@click.option("--replicas-before", type=int, default=None, help="a scale's replicas before it")
@click.option("--replicas-after", type=int, default=None, help="a scale's replicas after it")
@click.pass_context
def annotate(ctx: click.Context, tenant_id: str, time_: str, end: str | None, kind: str | None, text: str,
             tags: tuple[str, ...], metrics: tuple[str, ...], replicas_before: int | None,
             replicas_after: int | None) -> None:
    """Report a deploy or scaling action of TENANT_ID to its detector, as `POST /annotations` does: kept
    in the store, where every replica of its service reads it within HELIOS_EVENTS_POLL_SECONDS."""
    from pydantic import ValidationError

    from helios_pipelines.commands.db import open_store
    from helios_pipelines.core.ml.changes import ChangeAnnotation
    from helios_pipelines.core.ops.store import StoreError
    from helios_pipelines.core.tenants import UnknownMetricError
    from serving.errors import invalid_fields

    tenant = load_tenant(ctx, tenant_id)
    given = {"time_end": end, "kind": kind, "replicas_before": replicas_before, "replicas_after": replicas_after}
    try:
        names = [tenant.resolve_metric(name) for name in metrics]  # by the logical names the detector compares
        change = ChangeAnnotation(time=time_, text=text, tags=list(tags), metrics=names,
                                  **{k: v for k, v in given.items() if v is not None})
    except UnknownMetricError as exc:
        raise click.ClickException(str(exc)) from None
    except ValidationError as exc:  # named as the service names them
        raise click.ClickException(f"tenant '{tenant.id}': {invalid_fields(exc.errors())}") from None
    store = open_store()
    try:
        posted_id = store.add_change(tenant.id, change.time, change.model_dump(mode="json"))
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        store.close()
    until = f" until {change.time_end.isoformat()}" if change.time_end else ""
    click.echo(f"change {posted_id} of {tenant.id}: {change.label}{until}; "
               "every replica of its service reads it within HELIOS_EVENTS_POLL_SECONDS")
