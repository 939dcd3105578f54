import pytest

from helios_pipelines.core.models.base import SavableModel
from helios_pipelines.core.models.capacity import CapacityPlanner
from helios_pipelines.core.tenants import AlertThresholds, ScalingTarget


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
    assert _step(rec, "replicas_for_forecast").explanation == "ceil(1e+04 / 80)"
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
    # The forecast dips now but the window ahead needs 100 replicas again: hold.
    rec = planner.recommend("game-server", 4_000, 8_000, current_replicas=120)
    assert _step(rec, "scale_down_stabilised").value == 100
    assert rec.replicas == 108  # -10 % of 120 at most per period
    # No need ahead either: still only -10 % per period.
    rec = planner.recommend("game-server", 4_000, 4_000, current_replicas=120)
    assert rec.replicas == 108


def test_scale_up_is_fast_but_rate_limited(planner):
    rec = planner.recommend("game-server", 10_000, 10_000, current_replicas=10)
    # +100 % per 15 s over a 3-minute lead time (12 periods) reaches far beyond 125.
    assert rec.replicas == 125
    rec = planner.recommend("game-server", 10_000, 10_000, current_replicas=0)
    assert rec.replicas == 1


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
