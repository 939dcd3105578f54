"""Deploys and scaling actions the tenant reports are known causes of alerts (issue 17 item 1).

The rule on one metric's alert state is worked out by hand on a few rows; then the demo tenant's
detector, on its simulated monitoring, meets a deploy's blip, a deploy's lasting regression and a
scaling action.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from helios_pipelines.core.ml.changes import ChangeAnnotation, explained, rescaled
from helios_pipelines.core.ml.models.episodes import episodes
from helios_pipelines.core.ml.training import tenant_detector
from helios_pipelines.core.ops.anomaly_log import record_detection
from helios_pipelines.core.sources.simulator import Simulator
from tests.conftest import AS_OF
from tests.harness.store_backends import add_customer

INDEX = pd.date_range("2026-11-02 03:00", periods=12, freq="1min", tz="UTC")


def change(minute: int, end_minute: int | None = None, **fields) -> ChangeAnnotation:
    end = None if end_minute is None else INDEX[0] + pd.Timedelta(minutes=end_minute)
    return ChangeAnnotation(time=INDEX[0] + pd.Timedelta(minutes=minute), time_end=end, **fields)


def rows(*alerting: int) -> np.ndarray:
    state = np.zeros(len(INDEX), dtype=bool)
    state[list(alerting)] = True
    return state


def explain(state, changes, metric="cpu"):
    return explained(state, INDEX[: len(state)], metric, changes, window_rows=4, recovery_window=2)


# ---- the annotation ------------------------------------------------------------------------------

def test_grafanas_annotation_body_is_a_change_with_epoch_millisecond_times():
    posted = ChangeAnnotation.model_validate({
        "dashboardUID": "helios", "panelId": 2, "time": 1_764_561_600_000, "timeEnd": 1_764_562_500_000,
        "tags": ["deploy", "game-server"], "text": "game-server v1.4.2"})
    assert posted.time == pd.Timestamp("2025-12-01 04:00", tz="UTC")  # 1,764,561,600 s after 1970
    assert posted.time_end == pd.Timestamp("2025-12-01 04:15", tz="UTC")
    assert posted.kind == "deploy" and posted.label.startswith("deploy 'game-server v1.4.2' at 2025-12-01T04:00")
    assert ChangeAnnotation.model_validate(posted.model_dump(mode="json")) == posted  # stored and read back


def test_a_scaling_tag_makes_a_scale_whose_factor_is_replicas_before_over_after():
    scaled = ChangeAnnotation(time=INDEX[0], tags=["Scaling"], replicas_before=4, replicas_after=8, metrics=["cpu"])
    assert scaled.kind == "scale" and scaled.factor == 0.5


@pytest.mark.parametrize(("fields", "named"), [
    ({"time": "2026-11-02T03:00:00Z", "timeEnd": "2026-11-02T02:59:00Z"}, "time_end (Grafana's timeEnd)"),
    ({"time": "2026-11-02T03:00:00Z", "time_end": "2026-11-02T03:00:00Z"}, "must be after time"),
    ({"time": "2026-11-02T03:00:00Z", "time_end": "2026-11-02T09:01:00Z"}, "at most 6 hours"),
    ({"time": "2026-11-02T03:00:00Z", "time_end": "2026-11-02T04:00:00Z", "timeEnd": 1}, "not both"),
    ({"time": "not a time"}, "time"),
    ({"time": "2026-11-02T03:00:00Z", "replicas_before": 4}, "give both or neither"),
    ({"time": "2026-11-02T03:00:00Z", "replicas_before": 4, "replicas_after": 8, "metrics": ["cpu"],
      "kind": "deploy"}, "kind must be 'scale'"),
    ({"time": "2026-11-02T03:00:00Z", "replicas_before": 4, "replicas_after": 8, "kind": "scale"},
     "name the per-replica metrics"),
])
def test_a_malformed_change_is_refused_naming_the_field(fields, named):
    with pytest.raises(ValidationError, match=named.replace("(", r"\(").replace(")", r"\)")):
        ChangeAnnotation.model_validate(fields)


# ---- the window rule on one metric's alert state ------------------------------------------------
# window_rows=4 where a change has no end; recovery_window=2: an episode whose value came back at row r
# alerts through row r and has closed at row r + 1, so one that came back by a window's last row w has
# closed by row w + 1, the first row after the window: there the rule decides.

def test_an_episode_that_starts_and_returns_inside_the_window_is_silent():
    state, causes = explain(rows(3, 4), [change(2, 6)])  # window rows 2..5; the episode is rows 3-4
    assert not state.any() and causes == [None] * 12


def test_an_episode_that_came_back_on_the_windows_last_row_is_silent():
    state, _ = explain(rows(3, 4, 5), [change(2, 6)])  # back at row 5, closed at row 6
    assert not state.any()


def test_an_episode_that_came_back_on_the_first_row_after_the_window_opens_there_naming_the_change():
    state, causes = explain(rows(3, 4, 5, 6), [change(2, 6, text="v2")])  # back at row 6: outside
    assert np.flatnonzero(state).tolist() == [6]
    assert causes[6] == f"deploy 'v2' at {INDEX[2].isoformat()}" and causes[:6] == [None] * 6


def test_an_episode_still_away_when_the_window_ends_opens_at_its_first_row_after_it():
    state, causes = explain(rows(3, 4, 5, 6, 7, 8), [change(2, 6, text="v2")])
    assert np.flatnonzero(state).tolist() == [6, 7, 8]
    assert causes[6:9] == [f"deploy 'v2' at {INDEX[2].isoformat()}"] * 3 and causes[:6] == [None] * 6


def test_an_episode_inside_overlapping_windows_is_decided_at_the_latest_whatever_their_order():
    short, long = change(2, 4, text="api"), change(2, 9, text="web")  # rows 2..3 and rows 2..8
    for order in ([short, long], [long, short]):
        assert not explain(rows(*range(3, 9)), order)[0].any()  # back at row 8, inside the long one
        state, causes = explain(rows(*range(3, 10)), order)  # back at row 9: after both
        assert np.flatnonzero(state).tolist() == [9] and causes[9] == long.label


def test_inside_a_window_not_yet_ended_an_episode_is_silent_whatever_comes_later():
    # Scoring is causal: the latest row is row 4, the window ends at row 6.
    state, _ = explain(rows(3, 4)[:5], [change(2, 6)])
    assert not state.any()


def test_a_change_without_an_end_lasts_window_rows():
    state, causes = explain(rows(3, 4, 5, 6, 7, 8), [change(2)])  # rows 2..5
    assert np.flatnonzero(state).tolist() == [6, 7, 8] and causes[6] is not None


def test_an_episode_that_began_before_the_change_or_on_another_metric_is_untouched():
    before = rows(1, 2, 3, 4)
    assert explain(before, [change(2, 6)])[0].tolist() == before.tolist()
    assert explain(rows(3, 4), [change(2, 6, metrics=["latency"])])[0].tolist() == rows(3, 4).tolist()


def test_a_change_without_an_end_from_before_the_first_row_explains_nothing_in_the_frame():
    # Its window's rows are not all in the frame: counting them from the first row would silence rows 0-3.
    early = ChangeAnnotation(time=INDEX[0] - pd.Timedelta("1min"), kind="deploy")
    assert explain(rows(1, 2), [early])[0].tolist() == rows(1, 2).tolist()


def test_a_scaling_after_the_detector_learned_divides_its_per_replica_metrics_by_the_known_factor():
    frame = pd.DataFrame({"cpu": [10.0, 10.0, 10.0, 5.0, 5.0], "players": [100.0] * 5}, index=INDEX[:5])
    scaling = change(3, kind="scale", replicas_before=4, replicas_after=8, metrics=["cpu"])  # per-replica CPU halves
    assert rescaled(frame, [scaling], learned_until=INDEX[2])["cpu"].tolist() == [10.0] * 5
    assert rescaled(frame, [scaling], learned_until=INDEX[2])["players"].tolist() == [100.0] * 5  # not named
    # A scaling the training history already held is in what the detector learned: left as it is.
    assert rescaled(frame, [scaling], learned_until=INDEX[4])["cpu"].tolist() == [10.0, 10.0, 10.0, 5.0, 5.0]


# ---- the demo tenant's detector ----------------------------------------------------------------

@pytest.fixture(scope="module")
def gaming(demo_registry):
    tenant = demo_registry.get("gaming-corp")
    metrics = sorted(tenant.anomaly_metrics)
    history = Simulator(tenant).fetch(AS_OF - pd.Timedelta(days=tenant.training.history_days), AS_OF)[metrics]
    detector = tenant_detector(tenant).fit(history)
    deployed = AS_OF + pd.Timedelta("1D 3h")  # a weekday night: quiet traffic, no event
    frame = Simulator(tenant).fetch(deployed - pd.Timedelta("2D"), deployed + pd.Timedelta("3h"))[detector.metrics_]
    return tenant, detector, frame, deployed


LATENCIES = ["game_latency_p99", "http_latency"]


def drawn(detector, frame, changes=(), since=None):
    scores = detector.score(frame, changes=changes)
    state = detector.alert_state(scores, frame, changes)
    watched = frame.index >= since
    return episodes(scores[watched], state.state[watched]), scores, state


def test_a_reported_deploys_restart_blip_pages_no_one_and_the_same_blip_unreported_does(gaming):
    tenant, detector, frame, deployed = gaming
    blip = frame.copy()
    restarting = (blip.index >= deployed) & (blip.index < deployed + pd.Timedelta("3min"))
    blip.loc[restarting, LATENCIES] *= 5  # pods restarting: three minutes of five times the latency
    unreported, *_ = drawn(detector, blip, since=deployed - pd.Timedelta("1h"))
    assert len(unreported) == 1 and set(unreported[0].metrics) == set(LATENCIES)
    deploy = ChangeAnnotation(time=deployed.to_pydatetime(), time_end=(deployed + pd.Timedelta("15min")).to_pydatetime(),
                              tags=["deploy"], text="game-server v1.4.2")
    reported, *_ = drawn(detector, blip, [deploy], since=deployed - pd.Timedelta("1h"))
    assert reported == []


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_a_deploys_lasting_regression_pages_when_its_window_ends_naming_the_deploy(gaming, store):
    tenant, detector, frame, deployed = gaming
    regressed = frame.copy()
    regressed.loc[regressed.index >= deployed, LATENCIES] *= 3  # the new version is three times slower, and stays
    window_end = deployed + pd.Timedelta("15min")
    deploy = ChangeAnnotation(time=deployed.to_pydatetime(), time_end=window_end.to_pydatetime(),
                              tags=["deploy"], text="game-server v1.4.2")
    found, scores, state = drawn(detector, regressed, [deploy], since=deployed - pd.Timedelta("1h"))
    # It opens once a return inside the window would have closed it: the recovery window after the
    # window's last step, less one step (the module docstring's rule, worked by hand above).
    opened = window_end + (detector.recovery_window - 2) * tenant.step_timedelta
    assert len(found) == 1 and found[0].start == opened and set(found[0].metrics) >= {"game_latency_p99"}
    assert state.after_change.at[opened, found[0].first] == deploy.label

    add_customer(store, tenant)  # what the operator reads: the episode names the deploy
    at = opened
    result = {"tenant": tenant.id, "threshold": detector.threshold, "scores": [
        {"metric": m, "timestamp": at.isoformat(), "value": float(regressed.at[at, m]), "score": float(scores.at[at, m]),
         "anomalous": bool(state.state.at[at, m]), "warming_up": False,
         **({"after_change": state.after_change.at[at, m]} if state.after_change.at[at, m] else {})}
        for m in detector.metrics_]}
    record_detection(store, tenant, result, now=at.to_pydatetime())
    (_, episode), = store.list_anomalies(tenant.id)
    assert "still away after the deploy 'game-server v1.4.2'" in episode.description


def test_a_reported_scale_up_doubling_the_fleet_pages_no_one_and_unreported_it_pages(gaming, monkeypatch):
    tenant, detector, frame, scaled_at = gaming
    fleet = Simulator._fleet

    def doubled_from_then(simulator, index):  # 2x the replicas from then on: utilisation halves, as do
        replicas = fleet(simulator, index)    # the queue and latency its pressure drove (the simulator's model)
        return np.where(index >= scaled_at, 2 * replicas, replicas)

    monkeypatch.setattr(Simulator, "_fleet", doubled_from_then)
    scaled = Simulator(tenant).fetch(frame.index[0], frame.index[-1] + tenant.step_timedelta)[detector.metrics_]
    after = scaled.index >= scaled_at
    assert np.allclose(scaled.loc[after, "server_utilization"], frame.loc[after, "server_utilization"] / 2, rtol=0.03)
    unreported, *_ = drawn(detector, scaled, since=scaled_at - pd.Timedelta("1h"))
    assert len(unreported) == 1 and unreported[0].metrics == ("server_utilization",)
    scale = ChangeAnnotation(time=scaled_at.to_pydatetime(), tags=["scale"], replicas_before=4, replicas_after=8,
                             metrics=["server_utilization"])
    reported, *_ = drawn(detector, scaled, [scale], since=scaled_at - pd.Timedelta("1h"))
    assert reported == []
