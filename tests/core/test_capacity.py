import pytest

from helios_pipelines.core.ml.models.base import SavableModel
from helios_pipelines.core.ml.models.capacity import CapacityPlanner
from helios_pipelines.core.tenants import ScalingTarget
from helios_pipelines.core.tenants.alerting import AlertThresholds


@pytest.fixture
def planner():
    target = ScalingTarget(
        service="game-server", metric="concurrent_users", capacity_per_replica=100,
        target_utilization=0.8, min_replicas=5, max_replicas=400, startup_seconds=120,
    )
    return CapacityPlanner([target], {"game-server": 100.0}, AlertThresholds())


def _step(rec, name):
    return next(s for s in rec.steps if s.name == name)


def test_replicas_from_the_upper_quantile_over_usable_capacity(planner):
    rec = planner.recommend("game-server", demand_upper=10_000, demand_upper_window_max=10_000)
    assert rec.replicas == 125  # ceil(10000 / (100 * 0.8))
    assert _step(rec, "usable_capacity_per_replica").value == 80
    assert _step(rec, "replicas_for_forecast").explanation.startswith(
        "max(ceil(1e+04 / 80), ceil(1e+04 / (100 x capacity_critical 0.9)))")
    assert rec.utilization_at_recommendation == pytest.approx(0.8)
    assert rec.share_of_max_capacity == pytest.approx(0.25)  # 10000 / (400 x 100)
    assert not rec.capacity_warning and not rec.capacity_critical
    warning = planner.recommend("game-server", 31_000, 31_000)
    assert warning.capacity_warning and not warning.capacity_critical
    assert rec.horizon_minutes == 3  # 120 s start-up + 30 s scale-up window, rounded up


def test_min_and_max_replicas_clamp_and_flag_critical(planner):
    assert planner.recommend("game-server", 10, 10).replicas == 5
    rec = planner.recommend("game-server", 50_000, 50_000)
    assert rec.replicas == 400
    assert rec.capacity_critical  # 50000 / (400 * 100) = 1.25
    assert _step(rec, "share_of_max_capacity").value == pytest.approx(1.25)


def test_scale_down_is_slow_and_stabilised(planner):
    # The forecast dips at the lead time but needs 100 replicas before then (removed replicas stop at
    # once, added ones serve only after the lead time): hold.
    rec = planner.recommend("game-server", 4_000, 8_000, current_replicas=120)
    assert _step(rec, "scale_down_stabilised").value == 100
    assert rec.replicas == 108  # -10 % of 120 at most per period
    # No need before the lead time either: still only -10 % per period.
    rec = planner.recommend("game-server", 4_000, 4_000, current_replicas=120)
    assert rec.replicas == 108


def test_the_point_forecast_is_sized_at_the_target_and_the_upper_quantile_at_the_critical_utilisation(planner):
    # 100 per replica, target 0.8, capacity_critical 0.9 (the default thresholds).
    # Point 8,000 and upper 10,000: max(ceil(8000 / 80) = 100, ceil(10000 / 90) = 112) = 112.
    rec = planner.recommend("game-server", 10_000, 10_000, demand_expected=8_000, demand_expected_window_max=8_000)
    assert rec.replicas == 112 and _step(rec, "expected_forecast").value == 8_000
    # A narrow interval (upper 8,500): the point forecast at the target decides, max(100, ceil(94.4) = 95) = 100.
    assert planner.recommend("game-server", 8_500, 8_500, demand_expected=8_000).replicas == 100
    # The upper quantile at the target as well would have asked ceil(10000 / 80) = 125: headroom counted twice.


def test_a_scale_down_keeps_only_what_the_forecast_needs_until_the_lead_time(planner):
    # At the lead time 4,000 (50 replicas) would do, but until then the upper quantile reaches 8,100:
    # ceil(8100 / 90) = 90 replicas are kept (within -10 % of 120 = 108 at most, so 108).
    rec = planner.recommend("game-server", 4_000, 8_100, current_replicas=120, demand_expected=3_000,
                            demand_expected_window_max=6_000)
    assert _step(rec, "scale_down_stabilised").value == 90
    assert rec.replicas == 108
    rec = planner.recommend("game-server", 4_000, 8_100, current_replicas=95, demand_expected=3_000,
                            demand_expected_window_max=6_000)
    assert rec.replicas == 90  # -10 % of 95 allows 86; the next minutes' need holds 90


def test_scale_up_is_fast_but_rate_limited(planner):
    rec = planner.recommend("game-server", 10_000, 10_000, current_replicas=10)
    # +100 % per 15 s over a 3-minute lead time (12 periods) reaches far beyond 125.
    assert rec.replicas == 125
    # From 0 the rate limit reaches only 1 replica, but the answer never goes below min_replicas 5.
    rec = planner.recommend("game-server", 10_000, 10_000, current_replicas=0)
    assert rec.replicas == 5
    assert _step(rec, "scale_up_rate_limited").value == 1
    assert _step(rec, "bounded").value == 5


def test_an_anomalous_input_never_scales_down(planner):
    rec = planner.recommend("game-server", 1_000, 1_000, current_replicas=100, input_anomalous=True)
    assert rec.replicas == 100 and rec.input_anomalous
    assert _step(rec, "anomaly_hold").value == 100


def test_unknown_service_names_the_known_ones(planner):
    with pytest.raises(KeyError, match="no scaling target for 'web'; services: game-server"):
        planner.target("web")
    assert planner.target("concurrent_users").service == "game-server"


def test_round_trip(tmp_path, planner):
    loaded = SavableModel.load(planner.save(tmp_path / "p"))
    assert loaded.recommend("game-server", 7_000, 7_000).to_dict() == planner.recommend("game-server", 7_000, 7_000).to_dict()


@pytest.fixture
def small_planner():
    target = ScalingTarget(
        service="api", metric="requests", capacity_per_replica=10,
        target_utilization=0.5, min_replicas=3, max_replicas=40, startup_seconds=120,
    )
    return CapacityPlanner([target], {"api": 10.0}, AlertThresholds())


def test_scaling_down_from_above_max_answers_max_not_the_rate_limited_count(small_planner):
    # The reported bug: current 100 with max 40. The scale-down rate limit alone keeps
    # ceil(100 x 0.9) = 90; the HPA itself goes straight to max when current is above it.
    rec = small_planner.recommend("api", demand_upper=100, demand_upper_window_max=100, current_replicas=100)
    assert _step(rec, "replicas_for_forecast").value == 20  # ceil(100 / (10 x 0.5))
    assert _step(rec, "scale_down_rate_limited").value == 90
    assert rec.replicas == 40


def test_an_anomaly_hold_never_exceeds_max_replicas(small_planner):
    rec = small_planner.recommend("api", 100, 100, current_replicas=100, input_anomalous=True)
    assert _step(rec, "anomaly_hold").value == 100
    assert rec.replicas == 40


def test_scaling_up_from_below_min_answers_at_least_min(small_planner):
    # Forecast needs 2 (ceil(8 / 5)); current 1 is below min 3: the answer is min.
    rec = small_planner.recommend("api", 8, 8, current_replicas=1)
    assert rec.replicas == 3


@pytest.mark.parametrize("current", [-1, 10**30, 1_000_001])
def test_current_replicas_outside_what_a_workload_can_have_is_refused_by_name(small_planner, current):
    with pytest.raises(ValueError, match=f"current_replicas must be between 0 and 1000000, got {current}"):
        small_planner.recommend("api", 100, 100, current_replicas=current)


def test_every_answer_stays_within_min_and_max(small_planner):
    # Sweep demand, current replicas and the hold: min 3 <= replicas <= max 40 always.
    for demand in (0, 1, 8, 150, 199, 200, 201, 10_000):
        for current in (None, 0, 1, 2, 3, 20, 39, 40, 41, 100, 1_000_000):
            for anomalous in (False, True):
                rec = small_planner.recommend("api", demand, demand * 1.5, current, anomalous)
                assert 3 <= rec.replicas <= 40, (demand, current, anomalous, rec.replicas)
