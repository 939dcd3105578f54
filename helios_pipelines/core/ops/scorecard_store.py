"""Event scorecards written, kept and rolled up: from the champions to a stored scorecard, an MLflow
run with its plot and a summary line on the tenant's alert channels; the monthly report sums them.

Scorecards are kept in the Helios store (``event_scorecards``, one row per event occurrence and
scaled service, a later scoring replacing it), read by ``helios events scorecard``, ``helios report``,
the service's ``GET /events/<name>/scorecard`` and its dashboard series, on whichever machine.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from helios_pipelines.core.ml.events import EventSchedule, Occurrence
from helios_pipelines.core.ml.peaks import KIND as LEARNED_PEAK
from helios_pipelines.core.ml.peaks import PeakSchedule
from helios_pipelines.core.ops.exposition import Sample
from helios_pipelines.core.ops.scorecard import (
    Scorecard,
    UnfinishedEventError,
    event_scorecard,
    find_occurrence,
)
from helios_pipelines.core.tenants import ScheduledEvent, TenantConfig

log = logging.getLogger(__name__)


def save(store, card: Scorecard) -> int:
    """Store ``card``, replacing the scorecard of the same occurrence and service."""
    return store.save_scorecard(card.tenant, card.to_dict())


def stored(store, tenant: TenantConfig, occurrence: Occurrence, service: str | None = None) -> Scorecard | None:
    """The stored scorecard of ``occurrence`` for ``service`` (the tenant's first scaling target)."""
    service = service or tenant.scaling[0].service
    found = store.scorecard(tenant.id, occurrence.name, occurrence.start.to_pydatetime(), service)
    return None if found is None else Scorecard.from_dict(found)


def scored(store, tenant: TenantConfig, occurrence: Occurrence) -> bool:
    """Whether ``occurrence`` has a scorecard for the tenant's first scaling target. A learned peak's
    occurrence counts as scored when any stored scorecard overlaps it: a retrain that moves a peak by a
    bin renames it ("learned peak daily 13:30" becomes "... 13:00"), and the same window must not be
    scored again under its new name (the monthly report would count it twice)."""
    if stored(store, tenant, occurrence) is not None:
        return True
    if occurrence.kind != LEARNED_PEAK:
        return False
    service = tenant.scaling[0].service
    return any(card.service == service and pd.Timestamp(card.start) < occurrence.end
               for card in all_stored(store, tenant.id, ends_from=occurrence.start + pd.Timedelta(microseconds=1)))


def learned_schedule(tracker, tenant_id: str) -> PeakSchedule | None:
    """The learned peaks of the tenant's champion planner, from its version's ``peaks`` tag (one registry
    call, no model download); None before the tenant has a champion planner."""
    from helios_pipelines.core.ml.tracking import CHAMPION, registered_model_name

    champion = tracker.version_by_alias(registered_model_name(tenant_id, "capacity_planner"), CHAMPION)
    return None if champion is None else PeakSchedule.from_dict(champion.tags.peaks)


def all_stored(store, tenant_id: str, ends_from: pd.Timestamp | None = None,
               ends_before: pd.Timestamp | None = None) -> list[Scorecard]:
    """The tenant's scorecards without their step tables, oldest first (ended in the range when given)."""
    return [Scorecard.from_dict(c) for c in store.scorecards(
        tenant_id, None if ends_from is None else ends_from.to_pydatetime(),
        None if ends_before is None else ends_before.to_pydatetime())]


def stored_scorecard(store, tenant: TenantConfig, name: str, now: pd.Timestamp,
                     posted: list[ScheduledEvent] = (), learned: PeakSchedule | None = None) -> Scorecard:
    """The stored scorecard of event ``name``'s latest finished occurrence (a scheduled event's or a
    learned peak's). UnknownEventError (404) for a name the tenant does not have, UnfinishedEventError
    (409) while it runs or before it was scored."""
    occurrence = find_occurrence(tenant, name, now, posted, learned)
    card = stored(store, tenant, occurrence)
    if card is None:
        raise UnfinishedEventError(
            f"event '{name}' of tenant '{tenant.id}' ended {occurrence.end:%Y-%m-%d %H:%M} UTC and has no scorecard "
            f"yet: `helios events scorecard {tenant.id} '{name}'` writes it"
        )
    return card


SCORECARD_SERIES = "helios_event_scorecard"
# Exported per scored event (the dashboard's scorecard table): the latest few, the figures that matter.
EXPORTED_SCORECARDS = 5
# Scorecards of events that ended longer ago than this are not exported (a quarter: a season launch).
EXPORTED_SINCE = pd.Timedelta("92D")


def scorecard_samples(store, tenant_id: str, now: pd.Timestamp | None = None) -> list[Sample]:
    """The latest scorecard of each of the most recently scored events (at most ``EXPORTED_SCORECARDS``,
    ended in the ``EXPORTED_SINCE`` before ``now``) as ``helios_event_scorecard{customer, event, start,
    controller, figure}``. One per event: a learned daily peak's scorecards would otherwise fill the table
    and push the week's tournament out of it."""
    now = now if now is not None else pd.Timestamp.now(tz="UTC")
    latest = {}
    for card in all_stored(store, tenant_id, ends_from=now - EXPORTED_SINCE):  # oldest first: the latest stays
        latest[(card.event, card.service)] = card
    out = []
    for card in sorted(latest.values(), key=lambda c: c.start)[-EXPORTED_SCORECARDS:]:
        base = {"customer": tenant_id, "event": card.event, "start": card.start[:16]}
        for controller in ("helios", "reactive"):
            for figure, value in getattr(card, controller).__dict__.items():
                out.append(Sample(SCORECARD_SERIES, base | {"controller": controller, "figure": figure}, float(value),
                                  "event scorecard: Helios vs a reactive HPA over a finished event"))
        for figure, value in {**card.forecast, **card.savings}.items():
            out.append(Sample(SCORECARD_SERIES, base | {"controller": "helios", "figure": figure}, float(value),
                              "event scorecard: Helios vs a reactive HPA over a finished event"))
    return out


# ---- the plot, MLflow and the alert ---------------------------------------------------------------
def plot(card: Scorecard):
    """Forecast band and actual (left axis); replicas needed, recommended by Helios and by a reactive
    HPA (right axis). A bare Figure: no pyplot global state."""
    from matplotlib.figure import Figure

    steps = pd.DataFrame(card.steps)
    stamps = pd.to_datetime(steps["timestamp"])
    fig = Figure(figsize=(11, 5))
    ax = fig.subplots()
    ax.fill_between(stamps, steps["lower"], steps["upper"], alpha=0.25, color="tab:blue", label="forecast 80% interval")
    ax.plot(stamps, steps["yhat"], color="tab:blue", lw=1, label=f"forecast ({card.lead_minutes} min ahead)")
    ax.plot(stamps, steps["actual"], color="black", lw=1, label=f"actual {card.metric}")
    ax.set_ylabel(card.metric)
    replicas = ax.twinx()
    replicas.step(stamps, steps["needed"], color="tab:green", lw=1, where="post", label="replicas needed")
    replicas.step(stamps, steps["helios"], color="tab:orange", lw=1.2, where="post", label="Helios (ready)")
    replicas.step(stamps, steps["reactive"], color="tab:red", lw=1, ls="--", where="post", label="reactive HPA (ready)")
    replicas.set_ylabel("replicas")
    handles = ax.get_legend_handles_labels()[0] + replicas.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], loc="upper left", fontsize=8)
    ax.set_title(f"{card.tenant} {card.event}: {card.service}")
    fig.autofmt_xdate()
    return fig


def log_to_mlflow(card: Scorecard, tracker) -> str:
    """An MLflow run in the tenant's experiment: figures as metrics, the plot, the whole scorecard."""
    import mlflow

    metrics = {f"forecast_{k}": v for k, v in card.forecast.items()}
    for who in ("helios", "reactive"):
        metrics |= {f"{who}_{k}": v for k, v in getattr(card, who).__dict__.items()}
    metrics |= card.savings
    tags = {"event": card.event, "event_kind": card.kind, "event_start": card.start, "service": card.service,
            **{f"scored_with_{what}": which for what, which in card.scored_with.items()}}
    with tracker.start_run(card.tenant, f"scorecard {card.event} {card.start[:10]}", tags=tags) as run:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if pd.notna(v)})
        mlflow.log_figure(plot(card), "scorecard.png")
        mlflow.log_dict(card.to_dict(), "scorecard.json")
        return run.info.run_id


def alert_summary(card: Scorecard, tenant: TenantConfig, store) -> int:
    """The summary line to the tenant's channels subscribed to ``event_scorecard`` (once per event)."""
    from helios_pipelines.core.ops.alerts import Alert, route

    alert = Alert(tenant=tenant.id, event="event_scorecard", alert_key=f"scorecard:{card.event}:{card.start}",
                  summary=card.summary(), occurred_at=pd.Timestamp(card.end).to_pydatetime(),
                  details={"forecast": card.forecast, "savings": card.savings})
    return route(store, tenant, [alert])


def write_scorecard(store, tenant: TenantConfig, occurrence: Occurrence, source, forecaster, planner,
                    service: str | None = None, on_progress: Callable[[int, int], None] | None = None,
                    scored_with: dict[str, str] | None = None) -> Scorecard:
    """Score ``occurrence`` and store it. ``source`` gives the history; ``forecaster`` and ``planner``
    are what Helios had before it (``scored_with`` says which)."""
    step = tenant.step_timedelta
    lead = pd.Timedelta(minutes=planner.lead_time_minutes(service or next(iter(planner.targets))))
    start = occurrence.start - pd.Timedelta("7D") - step * forecaster.full_history - lead - pd.Timedelta("1h")
    history = source.fetch(start, occurrence.end)
    card = event_scorecard(tenant, occurrence, history, forecaster, planner, service, on_progress)
    card.scored_with = dict(scored_with or {})
    save(store, card)
    return card


class ScorecardUnavailableError(LookupError):
    """No champion planner or forecaster to score with, or a service the planner does not scale."""


@dataclass(frozen=True)
class PublishedScorecard:
    card: Scorecard
    mlflow_run: str | None
    channels: int | None  # alert channels the summary was queued for; None when it was not queued
    alert_error: str | None = None


def score_event(tenant: TenantConfig, name: str | None, now: pd.Timestamp, source, tracker, store,
                service: str | None = None, log_mlflow: bool = True, alert: bool = True,
                on_progress: Callable[[int, int], None] | None = None) -> PublishedScorecard:
    """Everything that follows an event's end, for `helios events scorecard` and the Dagster scorecard
    job alike: score it with the forecaster and planner Helios had before it (``scorecard_models``: never
    a fit that saw the event), store it, log it to MLflow with its plot and
    queue the summary line for the tenant's channels (unless ``alert`` is off). Events posted to the
    service are found in the store beside the tenant's YAML ones, learned peaks in the champion planner.
    The scorecard stands without its notification: a routing failure is reported in ``alert_error``,
    not raised."""
    from helios_pipelines.core.ml.tracking import CHAMPION, load_helios_model, registered_model_name
    from helios_pipelines.core.ops.scorecard_models import models_before

    try:
        champion = load_helios_model(registered_model_name(tenant.id, "capacity_planner"), tracker=tracker)
        metric = champion.target(service).metric if service else next(iter(champion.targets.values())).metric
        if tracker.version_by_alias(registered_model_name(tenant.id, "forecaster", metric), CHAMPION) is None:
            raise LookupError(f"no champion forecaster of '{metric}'")
    except KeyError as exc:
        raise ScorecardUnavailableError(str(exc.args[0])) from None
    except Exception as exc:  # MLflow's own errors: no champion registered yet
        raise ScorecardUnavailableError(
            f"tenant '{tenant.id}' has no champion planner and forecaster to score with ({exc}); run `helios run {tenant.id}`"
        ) from None
    occurrence = find_occurrence(tenant, name, now, posted_events(store, tenant.id),
                                 PeakSchedule.from_dict(champion.peaks))
    models = models_before(tenant, occurrence, metric, champion, tracker, source)
    card = write_scorecard(store, tenant, occurrence, source, models.forecaster, models.planner, service, on_progress,
                           models.scored_with)
    run_id = log_to_mlflow(card, tracker) if log_mlflow else None
    channels, error = None, None
    if alert:
        try:
            channels = alert_summary(card, tenant, store)
        except Exception as exc:  # noqa: BLE001 - the scorecard is stored; the summary is a courtesy
            error = str(exc)
    return PublishedScorecard(card, run_id, channels, error)


def posted_events(store, tenant_id: str) -> list[ScheduledEvent]:
    """The events posted to the service for the tenant (``POST /events``, kept in the store); none for a
    tenant the store does not know."""
    from helios_pipelines.core.ops.store import UnknownCustomerError

    try:
        return [ScheduledEvent.model_validate(event) for _, event in store.events_after(tenant_id)]
    except UnknownCustomerError:
        return []


def finished_occurrences(tenant: TenantConfig, now: pd.Timestamp, lookback: pd.Timedelta,
                         posted: list[ScheduledEvent] = (), learned: PeakSchedule | None = None) -> list[Occurrence]:
    """Occurrences of the tenant's scheduled events (its YAML's and ``posted``) and of its ``learned``
    peaks (those no scheduled event covers) that ended in ``(now - lookback, now]``."""
    schedule = EventSchedule([*tenant.events, *posted])
    found = schedule.occurrences(now - lookback, now)
    if learned:
        found += learned.occurrences(now - lookback, now, schedule)
    return [o for o in found if now - lookback < o.end <= now]


# ---- the monthly roll-up ------------------------------------------------------------------------
def monthly_report(store, tenant_id: str, month: str) -> dict:
    """Sums over the scorecards of events that ended in ``month`` (YYYY-MM): pod-hours and cost saved
    against a reactive HPA, SLO minutes avoided, under-provisioned pod-minutes avoided."""
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", month):
        raise ValueError(f"month must look like 2026-11, got '{month}'")
    first = pd.Timestamp(f"{month}-01", tz="UTC")
    last = first + pd.offsets.MonthBegin(1)
    cards = all_stored(store, tenant_id, first, last)
    keys = ("pod_hours_saved", "cost_saved", "slo_minutes_avoided", "under_pod_minutes_avoided")
    return {
        "tenant": tenant_id,
        "month": f"{first:%Y-%m}",
        "events": [{"event": c.event, "start": c.start, "service": c.service, **c.savings} for c in cards],
        **{k: float(sum(c.savings[k] for c in cards)) for k in keys},
    }
