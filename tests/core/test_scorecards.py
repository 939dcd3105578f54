"""Event scorecards (issue 19, item 1): the arithmetic, the event lookup's errors, the stored roll-up."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helios_pipelines.core.ml.models.base import Forecaster
from helios_pipelines.core.ml.models.capacity import CapacityPlanner
from helios_pipelines.core.ops.scorecard import (
    UnfinishedEventError,
    UnknownEventError,
    event_scorecard,
    find_occurrence,
    reactive_hpa,
    ready_replicas,
)
from helios_pipelines.core.sources.simulator import Simulator
from helios_pipelines.core.tenants import ScalingTarget
from tests.conftest import AS_OF
from tests.harness.store_backends import add_customer


@pytest.fixture(scope="module")
def gaming(demo_registry):
    return demo_registry.get("gaming-corp")


def test_the_reactive_baseline_follows_the_hpa_documented_arithmetic():
    target = ScalingTarget(service="web", metric="requests", capacity_per_replica=20, target_utilization=0.5,
                           min_replicas=1, max_replicas=500)
    load = np.array([1000.0] * 3 + [500.0] * 10)
    spec = reactive_hpa(load, usable=10, target=target, step=pd.Timedelta("1min"), start=50)
    # up: ceil(1000 / 10) = 100 at once (+100 % per 15 s allows 16x a minute); down: the 300 s window
    # holds 100 until every desired count in it is 50, then -10 % a minute, rounded up as the HPA does:
    # ceil(100 x 0.9) = 90, ceil(81) = 81, ceil(72.9) = 73, ceil(65.7) = 66, ceil(59.4) = 60, ceil(54) = 54.
    assert spec.tolist() == [100, 100, 100, 100, 100, 100, 100, 90, 81, 73, 66, 60, 54]
    # Within the 10 % tolerance nothing moves: 1,050 / (100 x 10) = 1.05.
    assert reactive_hpa(np.array([1050.0] * 3), 10, target, pd.Timedelta("1min"), start=100).tolist() == [100] * 3


def test_new_replicas_serve_after_start_up_removed_ones_stop_at_once():
    assert ready_replicas(np.array([5, 10, 10, 10, 4, 4]), 2).tolist() == [5, 5, 5, 10, 4, 4]


def test_an_unknown_event_is_named_with_the_known_ones(gaming):
    with pytest.raises(UnknownEventError, match="has no event 'Finals'; events: Season 5 Launch, Weekend Tournament"):
        find_occurrence(gaming, "Finals", AS_OF)


def test_a_running_or_future_event_has_no_scorecard_yet(gaming):
    saturday = pd.Timestamp("2026-11-21T15:00:00Z")  # an hour into that week's tournament
    with pytest.raises(UnfinishedEventError, match="'Weekend Tournament' of tenant 'gaming-corp' is still running: it ends 2026-11-21 22:00"):
        find_occurrence(gaming, "Weekend Tournament", saturday)
    with pytest.raises(UnfinishedEventError, match="event 'Season 5 Launch' has not started yet"):
        find_occurrence(gaming, "Season 5 Launch", AS_OF)


def test_the_latest_finished_occurrence_is_scored(gaming):
    occurrence = find_occurrence(gaming, "Weekend Tournament", AS_OF)  # AS_OF is a Friday
    assert (occurrence.start, occurrence.end) == (pd.Timestamp("2026-11-14T14:00Z"), pd.Timestamp("2026-11-14T22:00Z"))
    assert find_occurrence(gaming, None, AS_OF) == occurrence


class Oracle(Forecaster):
    """Knows the future exactly (a zero-width interval): what a perfect forecast would have earned."""

    kind = "oracle"

    def __init__(self, truth: pd.Series, **kwargs):
        super().__init__(**kwargs)
        self.truth = truth

    def fit(self, history):
        self.fitted_ = True
        return self

    def _predict(self, horizon, history, events, level):
        stamps = pd.date_range(history.index[-1] + self.step, periods=horizon, freq=self.step)
        values = self.truth.reindex(stamps).interpolate(limit_direction="both").to_numpy()
        return pd.DataFrame({"timestamp": stamps, "yhat": values, "yhat_lower": values, "yhat_upper": values})


def test_a_perfect_forecast_scores_zero_error_and_beats_the_reactive_fleet_on_the_ramp(gaming):
    occurrence = find_occurrence(gaming, "Weekend Tournament", AS_OF)
    history = Simulator(gaming, now=AS_OF).fetch(occurrence.start - pd.Timedelta("2D"), occurrence.end + pd.Timedelta("1h"))
    truth = history["concurrent_users"].interpolate(limit_direction="both")
    oracle = Oracle(truth, step="1min", max_horizon=60, metric="concurrent_users", events=None).fit(truth)
    planner = CapacityPlanner.from_tenant(gaming)  # configured: 100 per replica x 0.8, 120 s start-up, lead 3 min
    card = event_scorecard(gaming, occurrence, history, oracle, planner)
    assert card.forecast["mae"] == pytest.approx(0, abs=1e-6) and card.forecast["coverage"] == 1.0
    assert card.forecast["peak_error"] == pytest.approx(0, abs=1e-9) and card.forecast["timing_error_minutes"] == 0
    assert card.lead_minutes == 3 and card.capacity_per_replica == 100 and card.capacity_source == "config"
    assert len(card.steps) == 8 * 60
    steps = pd.DataFrame(card.steps)
    assert (steps["needed"] == np.maximum(np.ceil(steps["actual"] / 80 - 1e-9), 5)).all()
    # The totals are the step table's: ready replicas against needed, one minute each.
    assert card.reactive.under_provisioned_pod_minutes == (steps["needed"] - steps["reactive"]).clip(lower=0).sum()
    assert card.helios.over_provisioned_pod_minutes == (steps["helios"] - steps["needed"]).clip(lower=0).sum()
    # The reactive HPA waits for the load and then for its pods: the ramp-in leaves it short.
    assert card.helios.under_provisioned_pod_minutes < card.reactive.under_provisioned_pod_minutes
    assert card.helios.cost == pytest.approx(card.helios.pod_hours * 0.12)
    assert "Weekend Tournament" in card.summary() and "vs a reactive HPA" in card.summary()


@pytest.fixture
def perfect_card(gaming):
    """The last November tournament's scorecard with a perfect forecast."""
    occurrence = find_occurrence(gaming, "Weekend Tournament", AS_OF)
    history = Simulator(gaming, now=AS_OF).fetch(occurrence.start - pd.Timedelta("2D"), occurrence.end + pd.Timedelta("1h"))
    truth = history["concurrent_users"].interpolate(limit_direction="both")
    return occurrence, event_scorecard(gaming, occurrence, history, Oracle(truth, step="1min", max_horizon=60).fit(truth),
                                       CapacityPlanner.from_tenant(gaming))


def test_a_scorecard_is_kept_in_the_store_and_scoring_it_again_replaces_it(gaming, perfect_card, store):
    from helios_pipelines.core.ops import scorecard_store

    occurrence, card = perfect_card
    add_customer(store, gaming)
    assert scorecard_store.stored(store, gaming, occurrence) is None
    first = scorecard_store.save(store, card)
    assert scorecard_store.stored(store, gaming, occurrence) == card  # step table included
    rescored = scorecard_store.Scorecard.from_dict(card.to_dict() | {"savings": {k: 2.0 for k in card.savings}})
    assert scorecard_store.save(store, rescored) == first
    assert scorecard_store.stored(store, gaming, occurrence) == rescored
    listed = scorecard_store.all_stored(store, gaming.id)
    assert [(c.event, c.start, c.savings) for c in listed] == [(card.event, card.start, rescored.savings)]
    assert listed[0].steps == []  # lists leave the step tables in the store
    # Another service's scorecard of the same occurrence is a row of its own.
    scorecard_store.save(store, scorecard_store.Scorecard.from_dict(card.to_dict() | {"service": "lobby"}))
    assert len(scorecard_store.all_stored(store, gaming.id)) == 2
    assert scorecard_store.stored(store, gaming, occurrence, "lobby").service == "lobby"
    # The dashboard's table reads the same rows: both controllers' figures per scored event.
    samples = scorecard_store.scorecard_samples(store, gaming.id, now=AS_OF)
    assert {s.name for s in samples} == {scorecard_store.SCORECARD_SERIES}
    assert {(s.labels["event"], s.labels["controller"]) for s in samples} == {
        ("Weekend Tournament", "helios"), ("Weekend Tournament", "reactive")}
    assert next(s.value for s in samples if s.labels["controller"] == "reactive"
                and s.labels["figure"] == "under_provisioned_pod_minutes") == card.reactive.under_provisioned_pod_minutes


def test_the_dashboard_shows_the_latest_scorecard_of_each_recent_event(gaming, perfect_card, store):
    from helios_pipelines.core.ops import scorecard_store

    _, tournament = perfect_card  # Saturday 2026-11-14
    add_customer(store, gaming)
    scorecard_store.save(store, tournament)
    # A learned daily peak scored on the six days after it: one row in the table, its latest (the 20th).
    for day in range(15, 21):
        start = pd.Timestamp(f"2026-11-{day}T18:30Z")
        scorecard_store.save(store, scorecard_store.Scorecard.from_dict(tournament.to_dict() | {
            "event": "learned peak daily 13:30", "kind": "learned_peak", "start": start.isoformat(),
            "end": (start + pd.Timedelta("150min")).isoformat()}))
    # A scorecard of an event that ended over a quarter before is not exported.
    scorecard_store.save(store, scorecard_store.Scorecard.from_dict(tournament.to_dict() | {
        "event": "Summer Cup", "start": "2026-08-01T14:00:00+00:00", "end": "2026-08-01T22:00:00+00:00"}))
    samples = scorecard_store.scorecard_samples(store, gaming.id, now=pd.Timestamp("2026-11-21T00:00Z"))
    assert {(s.labels["event"], s.labels["start"]) for s in samples} == {
        ("Weekend Tournament", "2026-11-14T14:00"), ("learned peak daily 13:30", "2026-11-20T18:30")}


def test_a_scorecard_of_a_tenant_the_store_does_not_know_is_refused_naming_it(perfect_card, store):
    from helios_pipelines.core.ops import scorecard_store
    from helios_pipelines.core.ops.store import UnknownCustomerError

    with pytest.raises(UnknownCustomerError, match="no customer 'gaming-corp' in the store"):
        scorecard_store.save(store, perfect_card[1])
    assert scorecard_store.all_stored(store, "gaming-corp") == []


def test_the_monthly_report_sums_the_months_stored_scorecards(gaming, perfect_card, store):
    from helios_pipelines.core.ops import scorecard_store

    add_customer(store, gaming)
    _, card = perfect_card  # ended 2026-11-14 22:00
    scorecard_store.save(store, card)
    other = scorecard_store.Scorecard.from_dict(card.to_dict() | {"start": "2026-11-07T14:00:00+00:00",
                                                                   "end": "2026-11-07T22:00:00+00:00",
                                                                   "savings": {k: 1.0 for k in card.savings}})
    scorecard_store.save(store, other)
    # Ends in December: not November's, though it started in November.
    december = scorecard_store.Scorecard.from_dict(card.to_dict() | {"start": "2026-11-30T20:00:00+00:00",
                                                                      "end": "2026-12-01T04:00:00+00:00"})
    scorecard_store.save(store, december)
    scorecard_store.save(store, card)  # scored twice: counted once
    report = scorecard_store.monthly_report(store, gaming.id, "2026-11")
    assert [e["start"] for e in report["events"]] == ["2026-11-07T14:00:00+00:00", card.start]
    assert report["pod_hours_saved"] == pytest.approx(card.savings["pod_hours_saved"] + 1.0)
    assert report["slo_minutes_avoided"] == pytest.approx(card.savings["slo_minutes_avoided"] + 1.0)
    assert len(scorecard_store.monthly_report(store, gaming.id, "2026-12")["events"]) == 1
    with pytest.raises(ValueError, match="month must look like 2026-11, got 'November'"):
        scorecard_store.monthly_report(store, gaming.id, "November")
