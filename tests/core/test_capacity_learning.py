"""Capacity per replica and lead time learned from the fleet's own series (issue 19, items 2 and 3)."""

from __future__ import annotations

import pandas as pd
import pytest

from helios_pipelines.core.ml.capacity_learning import learn_fleet, learn_fleet_dicts, replica_history
from helios_pipelines.core.ml.models.capacity import CapacityPlanner
from helios_pipelines.core.sources.simulator import Simulator
from tests.conftest import AS_OF

# The simulator's truths (its documented ground truth): 92 players / 46 requests/s per replica at 100 %,
# pod start-to-ready p90 = median x exp(0.3 x 1.2816): 110 s -> 161.6 s, 70 s -> 102.8 s.
TRUTH = {"gaming-corp": (92.0, 161.6), "shopfast": (46.0, 102.8)}


def _history(tenant, days):
    source = Simulator(tenant, now=AS_OF)
    return source.fetch(AS_OF - pd.Timedelta(days=days), AS_OF), source


@pytest.fixture(scope="module")
def gaming(demo_registry):
    return demo_registry.get("gaming-corp")


@pytest.fixture(scope="module")
def gaming_history(gaming):
    return _history(gaming, 4)


@pytest.mark.parametrize("tenant_id,days", [("gaming-corp", 4), ("shopfast", 7)])
def test_learned_capacity_is_within_ten_percent_of_the_truth_with_an_interval_covering_it(demo_registry, tenant_id, days):
    tenant = demo_registry.get(tenant_id)
    history, source = _history(tenant, days)
    target = tenant.scaling[0]
    learned = learn_fleet(tenant, history, {target.service: replica_history(source, target, history.index)})
    capacity = learned[target.service]["capacity_per_replica"]
    truth, _ = TRUTH[tenant_id]
    assert capacity.source == "learned" and not capacity.review
    assert capacity.value == pytest.approx(truth, rel=0.10)
    assert capacity.interval[0] <= truth <= capacity.interval[1]
    assert capacity.config_value == tenant.capacity_per_replica(target)  # the prior is kept alongside
    assert capacity.backtest["utilization_mae_learned"] < capacity.backtest["utilization_mae_config"]


@pytest.mark.parametrize("tenant_id,days", [("gaming-corp", 4), ("shopfast", 7)])
def test_measured_lead_time_is_within_one_step_of_the_truth(demo_registry, tenant_id, days):
    tenant = demo_registry.get(tenant_id)
    history, source = _history(tenant, days)
    planner = CapacityPlanner.from_tenant(tenant, learn_fleet_dicts(tenant, history, source))
    target = tenant.scaling[0]
    _, true_p90 = TRUTH[tenant_id]
    true_lead = -(-(true_p90 + target.behaviour.scale_up_window_s) // 60)  # ceil, in minutes
    step_minutes = tenant.step_timedelta.total_seconds() / 60
    assert abs(planner.lead_time_minutes(target.service) - true_lead) <= step_minutes
    assert planner.inputs(target.service)["startup_seconds"]["source"] == "learned"


def test_recommend_shows_the_learned_values_and_their_source(gaming, gaming_history):
    history, source = gaming_history
    planner = CapacityPlanner.from_tenant(gaming, learn_fleet_dicts(gaming, history, source))
    rec = planner.recommend("game-server", demand_upper=9_200, demand_upper_window_max=9_200)
    used = rec.planner_inputs["capacity_per_replica"]
    assert used["source"] == "learned" and used["value"] == pytest.approx(92, rel=0.02)
    # 9200 players / (about 92 x 0.8 usable per replica) = about 125 replicas, not config's 115
    assert 123 <= rec.replicas <= 127
    usable = next(s for s in rec.steps if s.name == "usable_capacity_per_replica")
    assert "learned" in usable.explanation and "configured 100 is the prior" in usable.explanation
    lead = next(s for s in rec.steps if s.name == "lead_time")
    assert lead.value == rec.horizon_minutes == 4  # ceil((~162 s + 30 s) / 60)
    assert "learned" in lead.explanation
    assert rec.to_dict()["planner_inputs"]["startup_seconds"]["source"] == "learned"


def test_history_without_the_fleet_series_names_them_and_falls_back_to_config(gaming, gaming_history):
    history, _ = gaming_history
    bare = gaming.model_copy(update={"scaling": [gaming.scaling[0].model_copy(
        update={"current_replicas": None, "utilization_metric": None, "startup_metric": None})]})
    learned = learn_fleet(bare, history)["game-server"]
    capacity, startup = learned["capacity_per_replica"], learned["startup_seconds"]
    assert (capacity.source, capacity.value) == ("config", 100.0)
    assert "current_replicas (not configured)" in capacity.note and "utilization_metric (not configured)" in capacity.note
    assert (startup.source, startup.value) == ("config", 120.0)
    assert "startup_metric (not configured)" in startup.note
    # Configured but absent from the history: the metric is named too.
    empty = history.assign(server_utilization=float("nan"))
    missing = learn_fleet(gaming, empty)["game-server"]["capacity_per_replica"]
    assert missing.source == "config" and "utilization_metric 'server_utilization' (no data in the history)" in missing.note
    planner = CapacityPlanner.from_tenant(bare, {"game-server": {k: v.to_dict() for k, v in learned.items()}})
    rec = planner.recommend("game-server", 8_000, 8_000)
    assert rec.replicas == 100  # 8000 / (100 x 0.8): the configured capacity
    assert "configured value: learning it needs" in next(s for s in rec.steps if s.name == "usable_capacity_per_replica").explanation


def test_a_learned_value_far_from_the_configuration_is_flagged_for_review_not_used(gaming, gaming_history):
    history, source = gaming_history
    hopeful = gaming.model_copy(update={"scaling": [gaming.scaling[0].model_copy(update={"capacity_per_replica": 150})]})
    target = hopeful.scaling[0]
    capacity = learn_fleet(hopeful, history, {target.service: replica_history(source, target, history.index)})[
        target.service]["capacity_per_replica"]
    assert capacity.review and capacity.source == "config" and capacity.value == 150
    assert capacity.learned == pytest.approx(92, rel=0.05)  # still reported, for the reviewer
    assert "flagged for review" in capacity.note and "more than 25% from" in capacity.note
