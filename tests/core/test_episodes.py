"""Episodes an operator would draw (issue 17 item 2), on the demo tenant's simulated monitoring."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from sqlalchemy import select

from helios_pipelines.cli import main
from helios_pipelines.core.ml.models.alerting import hold_until_return
from helios_pipelines.core.ml.models.episodes import episodes
from helios_pipelines.core.ml.training import tenant_detector
from helios_pipelines.core.ops.anomaly_log import episode_metrics, record_detection
from helios_pipelines.core.ops.store.schema import OutboxRow
from helios_pipelines.core.sources.simulator import Simulator
from tests.conftest import AS_OF
from tests.harness.store_backends import add_customer


@pytest.fixture(scope="module")
def gaming_detector(demo_registry):
    tenant = demo_registry.get("gaming-corp")
    metrics = sorted(tenant.anomaly_metrics)
    history = Simulator(tenant).fetch(AS_OF - pd.Timedelta(days=tenant.training.history_days), AS_OF)[metrics]
    return tenant, tenant_detector(tenant).fit(history)


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_the_demo_latency_spike_is_one_episode_and_one_alert_through_its_return_to_normal(
        gaming_detector, store, tmp_path, monkeypatch):
    tenant, detector = gaming_detector
    monkeypatch.setenv("HELIOS_HOME", str(tmp_path))
    start = AS_OF + pd.Timedelta("1D 3h")  # a weekday night: quiet traffic, no event
    injected = CliRunner().invoke(main, ["simulator", "inject", "gaming-corp", "--kind", "latency_spike",
                                         "--start", start.isoformat()])  # the demo's defaults: 20 min, x5
    assert injected.exit_code == 0, injected.output
    end = start + pd.Timedelta("20min")
    # The service scores each step on the day or two before it; scoring is causal, so every row of
    # one frame carries the score the service gives at that step.
    frame = Simulator(tenant).fetch(start - pd.Timedelta("2D"), end + pd.Timedelta("90min"))[detector.metrics_]
    scores = detector.score(frame)
    alerts = detector.alerts(scores, frame)
    watched = frame.index >= start - pd.Timedelta("1h")

    drawn = episodes(scores[watched], alerts[watched])
    assert len(drawn) == 1
    assert start <= drawn[0].start <= start + 2 * tenant.step_timedelta
    # The simulated spike multiplies both latency series at the same step (and nothing else).
    assert set(drawn[0].metrics) == {"game_latency_p99", "http_latency"}
    assert drawn[0].end is not None and drawn[0].end < end + pd.Timedelta("30min")  # closed by the return

    add_customer(store, tenant)
    for at in frame.index[watched]:  # one poll per step, as scheduled detection folds them in
        result = {"tenant": tenant.id, "threshold": detector.threshold, "scores": [
            {"metric": m, "timestamp": at.isoformat(), "value": float(frame.at[at, m]), "score": float(scores.at[at, m]),
             "anomalous": bool(alerts.at[at, m]), "warming_up": False} for m in detector.metrics_]}
        record_detection(store, tenant, result, now=at.to_pydatetime())
    recorded = [a for _, a in store.list_anomalies(tenant.id)]
    assert len(recorded) == 1 and set(episode_metrics(recorded[0])) == {"game_latency_p99", "http_latency"}
    assert recorded[0].resolved_at is not None
    with store.transaction() as session:
        outbox = session.scalars(select(OutboxRow).order_by(OutboxRow.id)).all()
    anomaly_rows = [r for r in outbox if r.alert_key.startswith("anomaly/")]
    destinations = {r.destination for r in anomaly_rows}
    assert destinations  # the demo tenant routes anomaly_detected somewhere
    for destination in destinations:  # one alert per channel: its trigger and its resolve
        assert [r.action for r in anomaly_rows if r.destination == destination] == ["trigger", "resolve"]
    assert len({r.alert_key for r in anomaly_rows}) == 1


def test_a_tournament_ramp_raising_latency_through_utilisation_is_expected_and_a_latency_spike_in_it_is_found(
        gaming_detector):
    tenant, detector = gaming_detector
    start = (AS_OF + pd.Timedelta(days=(5 - AS_OF.dayofweek) % 7)).normalize() + pd.Timedelta("14h")
    assert start.day_name() == "Saturday"  # the demo's weekly tournament starts then, ramping over 30 minutes
    frame = Simulator(tenant).fetch(start - pd.Timedelta("2D"), start + pd.Timedelta("3h"))[detector.metrics_]
    ramp = (frame.index >= start - pd.Timedelta("30min")) & (frame.index < start + pd.Timedelta("1h"))
    # The ramp outruns the customer's autoscaler: latency leaves the range of the two days before it.
    assert frame.loc[ramp, "game_latency_p99"].max() > frame.loc[frame.index < start - pd.Timedelta("1D"),
                                                                   "game_latency_p99"].max()
    alerts = detector.alerts(detector.score(frame), frame)
    assert not alerts.loc[ramp, ["game_latency_p99", "http_latency"]].any().any()

    spike = (frame.index >= start + pd.Timedelta("1h")) & (frame.index < start + pd.Timedelta("1h20min"))
    frame.loc[spike, ["game_latency_p99", "http_latency"]] *= 3  # what the simulator's latency spike does
    alerts = detector.alerts(detector.score(frame), frame)
    assert alerts.loc[spike, "game_latency_p99"].any()


def _episodes_of(state: np.ndarray) -> list[tuple[int, int]]:
    edges = np.diff(np.concatenate([[0], state.astype(int), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True))


def test_an_episode_closes_on_the_return_and_its_echo_does_not_reopen_it():
    values = np.full(120, 10.0)
    values[30:40] = 50.0  # the incident: 10 rows at 5x
    values[90:95] = 50.0  # a new incident, after the echo
    triggered = np.zeros(120, dtype=bool)
    triggered[[30, 31]] = True  # the views see the jump, then the spike is "seen before"...
    triggered[40:52] = True  # ...and the drop back (and its trailing mean) looks anomalous for a while
    triggered[90] = True
    below = ~triggered
    state = hold_until_return(triggered, below, values, recovery_window=5, level_window=20, settle_window=60)
    # Open from the jump through the spike although its score fell below the threshold; closed by 5
    # rows back at the pre-incident level (rows 40-44); the echo never re-opens; the new one does.
    assert _episodes_of(state) == [(30, 44), (90, 99)]


def test_a_change_that_stays_closes_once_it_has_scored_normal_for_the_settle_window():
    values = np.concatenate([np.full(30, 10.0), np.full(200, 30.0)])  # a new normal, never back
    triggered = np.zeros(230, dtype=bool)
    triggered[30:33] = True
    state = hold_until_return(triggered, ~triggered, values, recovery_window=5, level_window=20, settle_window=60)
    # Rows 33..92 are the 60 rows scoring below the threshold: it closes at row 92, the 60th.
    assert _episodes_of(state) == [(30, 92)]
