import json

import numpy as np
import pandas as pd
import pytest

from helios_pipelines.core.sources import make_source
from helios_pipelines.core.sources.base import counter_to_rate
from helios_pipelines.core.sources.simulator import Simulator, history_window, incidents_path
from helios_pipelines.core.tenants import MetricConfig, ScheduledEvent
from tests.conftest import AS_OF


@pytest.fixture(scope="module")
def gaming(demo_registry):
    return demo_registry.get("gaming-corp")


@pytest.fixture(scope="module")
def history(gaming):
    return Simulator(gaming, now=AS_OF).fetch(*history_window(gaming, AS_OF))


def test_history_covers_every_metric_on_the_tenant_grid(gaming, history):
    assert list(history.columns) == list(gaming.metrics)
    assert len(history) == 14 * 1440
    assert history.index.tz is not None and str(history.index.tz) == "UTC"
    assert (np.diff(history.index.asi8) == 60 * 10**9).all()


def test_same_seed_same_numbers_and_overlapping_windows_agree(gaming, history):
    again = Simulator(gaming, now=AS_OF).fetch(*history_window(gaming, AS_OF))
    pd.testing.assert_frame_equal(history, again)
    later = Simulator(gaming).fetch(AS_OF - pd.Timedelta("2D"), AS_OF)
    pd.testing.assert_frame_equal(later, history.loc[later.index])


def test_another_seed_gives_other_numbers(gaming, history):
    other = gaming.model_copy(update={"source": gaming.source.model_copy(update={"seed": 99})})
    frame = Simulator(other).fetch(AS_OF - pd.Timedelta("1D"), AS_OF)
    both = pd.concat([frame["concurrent_users"], history["concurrent_users"].loc[frame.index]], axis=1).dropna()
    assert not np.allclose(both.iloc[:, 0], both.iloc[:, 1])


def test_gaps_are_short_rare_and_never_filled(history):
    missing = history["concurrent_users"].isna()
    assert 0 < missing.mean() < 0.02
    runs = missing.astype(int).groupby((~missing).cumsum()).sum()
    assert runs.max() <= 5


def test_counters_reset_and_still_give_positive_rates(gaming):
    sim = Simulator(gaming)
    index = pd.date_range(AS_OF - pd.Timedelta("2D"), AS_OF, freq="1min", inclusive="left")
    raw = sim.native_frame(index)["container_cpu_usage_seconds_total"]
    assert (raw.diff() < 0).sum() >= 1, "a counter reset should happen about daily"
    rate = sim.fetch(index[0], AS_OF)["cpu_usage"]
    assert (rate.dropna() > 0).all()
    assert rate.dropna().between(1, 1000).all()


def test_counter_to_rate_treats_a_drop_as_a_reset():
    values = pd.Series([100.0, 160.0, 220.0, 30.0, 90.0, np.nan, 150.0])
    rate = counter_to_rate(values, pd.Timedelta("1min"))
    assert rate.tolist()[1:5] == [1.0, 1.0, 0.5, 1.0]
    assert np.isnan(rate.iloc[5]) and np.isnan(rate.iloc[6])


def test_players_peak_in_the_evening_of_their_own_time_zone(demo_registry):
    tenant = demo_registry.get("gaming-corp")
    singapore = tenant.model_copy(update={"regions": [], "timezone": "Asia/Singapore", "events": []})
    frame = Simulator(singapore).fetch(AS_OF - pd.Timedelta("7D"), AS_OF)
    by_hour = frame["concurrent_users"].groupby(frame.index.tz_convert("Asia/Singapore").hour).mean()
    assert 18 <= by_hour.idxmax() <= 22  # the guide's evening peak, 6 PM - 11 PM local
    assert by_hour.idxmin() in (3, 4, 5, 6)


def test_a_scheduled_event_multiplies_traffic_with_ramps(demo_registry):
    tenant = demo_registry.get("gaming-corp")
    start = pd.Timestamp("2026-11-18T12:00:00Z")
    launch = ScheduledEvent(name="Launch", start=start.to_pydatetime(), duration_hours=6, multiplier=3.0)
    with_event = tenant.model_copy(update={"events": [launch]})
    without = tenant.model_copy(update={"events": []})
    window = (start - pd.Timedelta("1h"), start + pd.Timedelta("7h"))
    boosted = Simulator(with_event).fetch(*window)["concurrent_users"]
    plain = Simulator(without).fetch(*window)["concurrent_users"]
    ratio = (boosted / plain).dropna()
    assert ratio[: start - pd.Timedelta("1min")].between(0.99, 1.01).all()
    middle = ratio[start + pd.Timedelta("2h") : start + pd.Timedelta("4h")]
    assert middle.between(2.0, 3.2).all()  # the realised effect differs from the configured 3.0
    assert ratio[start + pd.Timedelta("10min")] < middle.mean()  # ramping in


def test_injected_anomalies_are_kept_as_ground_truth_and_visible(gaming, history):
    sim = Simulator(gaming, now=AS_OF)
    truth = sim.anomalies(history.index[0], history.index[-1])
    assert len(truth) >= 3
    outages = [a for a in truth if a.kind == "outage" and a.start - pd.Timedelta("1D") >= history.index[0]]
    assert outages, "a fortnight should hold an outage at this seed"
    for outage in outages:
        during = history["concurrent_users"][outage.start : outage.end - pd.Timedelta("1min")].mean()
        day_before = history["concurrent_users"][
            outage.start - pd.Timedelta("1D") : outage.end - pd.Timedelta("1D") - pd.Timedelta("1min")
        ].mean()
        assert during < 0.6 * day_before


def test_current_values_and_listing(gaming):
    source = make_source(gaming, now=AS_OF)
    current = source.current_values()
    assert set(current) == set(gaming.metrics)
    assert current["concurrent_users"] > 0
    assert "game_server_active_players" in source.list_metrics()


def test_an_injected_incident_shows_in_every_reader_and_in_the_cli(gaming, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from helios_pipelines.cli import main

    monkeypatch.setenv("HELIOS_HOME", str(tmp_path))
    start = AS_OF - pd.Timedelta("3h")
    before = Simulator(gaming).fetch(start, start + pd.Timedelta("20min"))["game_latency_p99"]
    runner = CliRunner()
    result = runner.invoke(main, ["simulator", "inject", "gaming-corp", "--kind", "latency_spike",
                                  "--start", start.isoformat(), "--minutes", "20", "--magnitude", "4"])
    assert result.exit_code == 0, result.output
    assert "latency_spike on game_latency_p99 (x4)" in result.output
    after = Simulator(gaming).fetch(start, start + pd.Timedelta("20min"))["game_latency_p99"]
    assert np.allclose(after.dropna(), 4 * before.dropna())
    assert any(a.kind == "latency_spike" and a.start == start for a in Simulator(gaming).anomalies(start, AS_OF))

    unknown = runner.invoke(main, ["simulator", "inject", "gaming-corp", "--kind", "traffic_surge"])
    assert unknown.exit_code != 0 and "does not exist in the gaming profile" in unknown.output
    assert "queue_spike" in unknown.output
    assert len(json.loads(incidents_path("gaming-corp").read_text())) == 1  # the refused one is not kept


def test_ground_truth_labels_incidents_only_and_every_recurrence(gaming, tmp_path, monkeypatch):
    # A tournament (and the queue surge its ramp causes) is normal traffic: no label. Two outages of
    # the same kind on one day are two incidents: both labelled.
    monkeypatch.setenv("HELIOS_HOME", str(tmp_path))
    from helios_pipelines.core.sources.simulator import inject_incident

    quiet = gaming.model_copy(update={"source": gaming.source.model_copy(update={"anomalies_per_week": 0})})
    tournament = pd.Timestamp("2026-11-14T14:00:00Z")  # a Saturday of the weekly tournament
    window = (tournament - pd.Timedelta("1h"), tournament + pd.Timedelta("9h"))
    frame = Simulator(quiet).fetch(*window)
    assert frame["queue_length"].max() > 3 * frame["queue_length"].iloc[:30].mean()  # the surge is there
    assert Simulator(quiet).anomalies(*window) == []
    first = inject_incident(quiet, "outage", tournament + pd.Timedelta("2h"), 20, 3.0)
    second = inject_incident(quiet, "outage", tournament + pd.Timedelta("5h"), 20, 3.0)
    assert Simulator(quiet).anomalies(*window) == [first, second]


def test_the_fleet_carries_its_true_capacity_per_replica(demo_registry):
    # utilisation = load / (replicas x capacity): the demo tenants' truths are 92 players and 46 requests/s
    for tenant_id, truth in (("gaming-corp", 92.0), ("shopfast", 46.0)):
        tenant = demo_registry.get(tenant_id)
        target = tenant.scaling[0]
        sim = Simulator(tenant)
        frame = sim.fetch(AS_OF - pd.Timedelta("2D"), AS_OF)
        replicas = sim.fetch_series("replicas", MetricConfig(series=target.current_replicas.series), frame.index)
        assert (replicas.dropna() == replicas.dropna().round()).all() and replicas.min() >= target.min_replicas
        carried = (frame[target.metric] / (replicas * frame[target.utilization_metric])).dropna()
        assert carried.median() == pytest.approx(truth, rel=0.01)


def test_pod_start_times_appear_where_the_fleet_grew_ten_minutes_earlier(gaming):
    sim = Simulator(gaming)
    frame = sim.fetch(AS_OF - pd.Timedelta("3D"), AS_OF)
    replicas = sim.fetch_series("replicas", MetricConfig(series="kube_deployment_status_replicas"), frame.index)
    started = frame["pod_start_seconds"]
    grew = (replicas.diff() > 0).shift(10, fill_value=False)
    seen = started.notna() & replicas.notna() & replicas.shift(10).notna() & replicas.shift(11).notna()
    assert (started[seen].notna() == grew[seen]).all()
    # log-normal, median 110 s, sigma 0.3: p90 = 110 x exp(0.3 x 1.2816) = 161.6 s
    assert started.quantile(0.9) == pytest.approx(161.6, rel=0.05)
    assert started.min() > 30 and started.max() < 600
