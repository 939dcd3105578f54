"""helios_desired_replicas: /recommend's answer from the workload's current replica count, read from the
tenant's source, and what KEDA's rendered primary trigger makes the HPA do with it.

The HPA arithmetic below is Kubernetes' documented algorithm for an external metric (what KEDA's
prometheus scaler feeds the HPA), written out so the test computes it independently of Helios:

- target ``AverageValue`` t: ratio = value / (t x current); within the tolerance keep current, else
  ceil(value / t);
- target ``Value`` t: ratio = value / t; within the tolerance keep current, else ceil(ratio x current);
- then the behaviour: the largest recommendation of the stabilisation window (0 s: this one), the
  scale-up / scale-down policy limits per period, and [minReplicaCount, maxReplicaCount]; a workload
  above max goes to max, below min to min, before any metric is looked at.
"""

from __future__ import annotations

import math

import bentoml
import pandas as pd
import pytest
import yaml

from helios_pipelines.commands.deploy import DeploySettings, render
from helios_pipelines.core.ml.anomaly_zscore import score_to_z
from helios_pipelines.core.ml.models.capacity import observed_replicas
from helios_pipelines.core.sources import make_source
from helios_pipelines.core.tenants import TenantConfig
from helios_pipelines.core.tenants.scaling import ReplicaCountSeries
from serving.answers.series import ANOMALY_SCORE, ANOMALY_ZSCORE, CURRENT_REPLICAS, DESIRED_REPLICAS
from serving.runtime import TenantRuntime
from tests.conftest import AS_OF
from tests.harness.serve_harness import bentoml_serve

IMAGE = DeploySettings(image_tag="test")  # the rendered files read here do not name the image

pytestmark = pytest.mark.slow  # starts real processes: the real-process tier (make test-fast skips it)

NOW = AS_OF + pd.Timedelta("1D2h7min")
DEFAULT_TOLERANCE = 0.1  # the cluster-wide default when behaviour sets none


def hpa_desired(scaled_object: dict, trigger_name: str, value: float, current: int) -> int:
    spec = scaled_object["spec"]
    trigger = next(t for t in spec["triggers"] if t["name"] == trigger_name)
    low, high = spec["minReplicaCount"], spec["maxReplicaCount"]
    if current > high:
        return high
    if current < low:
        return low
    behavior = spec.get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior", {})
    target = float(trigger["metadata"]["threshold"])
    metric_type = trigger.get("metricType", "AverageValue")
    if metric_type == "AverageValue":
        ratio = value / (target * current) if current else math.inf
        proposal = math.ceil(value / target)
    elif metric_type == "Value":
        ratio = value / target
        proposal = math.ceil(ratio * current)
    else:
        raise ValueError(f"metricType {metric_type} does not apply to an external metric")
    direction = "scaleUp" if ratio > 1 else "scaleDown"
    tolerance = float(behavior.get(direction, {}).get("tolerance", DEFAULT_TOLERANCE))
    if abs(1 - ratio) <= tolerance:
        proposal = current
    for policy in behavior.get(direction, {}).get("policies", []):
        step = policy["value"] if policy["type"] == "Pods" else math.ceil(current * policy["value"] / 100)
        proposal = min(proposal, current + step) if direction == "scaleUp" else max(proposal, current - step)
    return min(max(proposal, low), high)


# ---- reading the current replica count -----------------------------------------------------------
def _files_tenant(tmp_path, rows: list[tuple[str, float | None]]) -> TenantConfig:
    table = pd.DataFrame({"timestamp": [t for t, _ in rows], "players": 1.0,
                          "kube_deployment_status_replicas": [v for _, v in rows]})
    path = tmp_path / "metrics.csv"
    table.to_csv(path, index=False)
    return TenantConfig.model_validate({
        "id": "files-tenant", "name": "Files", "step": "1min",
        "source": {"type": "files", "path": str(path)},
        "metrics": {"players": {"series": "players", "forecast": {"horizons": [15]}}},
        "scaling": [{"service": "api", "metric": "players", "capacity_per_replica": 10,
                     "current_replicas": {"series": "kube_deployment_status_replicas"}}],
    })


def test_the_current_count_is_the_latest_point_of_the_configured_series(tmp_path):
    tenant = _files_tenant(tmp_path, [("2026-11-30T10:00Z", 7), ("2026-11-30T10:01Z", 9), ("2026-11-30T10:02Z", None)])
    end = pd.Timestamp("2026-11-30T10:02Z")
    assert observed_replicas(make_source(tenant), tenant.scaling[0], end, tenant.step_timedelta) == 9


@pytest.mark.parametrize("value", [None, -3, 1e30])
def test_no_recent_point_or_an_impossible_count_reads_as_none(tmp_path, value):
    tenant = _files_tenant(tmp_path, [("2026-11-30T10:00Z", value)])
    end = pd.Timestamp("2026-11-30T10:00Z")
    assert observed_replicas(make_source(tenant), tenant.scaling[0], end, tenant.step_timedelta) is None


def test_a_series_the_source_lacks_reads_as_none(tmp_path):
    tenant = _files_tenant(tmp_path, [("2026-11-30T10:00Z", 4)])
    target = tenant.scaling[0].model_copy(update={"current_replicas": ReplicaCountSeries(series="no_such_column")})
    assert observed_replicas(make_source(tenant), target, pd.Timestamp("2026-11-30T10:00Z"), tenant.step_timedelta) is None


def test_the_simulator_publishes_the_demo_workloads_replica_count(arena):
    # The customer's reactive fleet: whole pods, at least its floor of 5 (simulator.py).
    source = make_source(arena, now=NOW)
    count = observed_replicas(source, arena.scaling[0], NOW.floor("5min"), arena.step_timedelta)
    assert isinstance(count, int) and count >= 5


# ---- the published series ------------------------------------------------------------------------
@pytest.fixture
def bundle(trained_arena) -> str:
    assert trained_arena.success
    return bentoml.models.get("helios-arena:latest").path


def _series(samples, name: str) -> float:
    return next(s.value for s in samples if s.name == name and s.labels["service"] == "game-server")


def test_desired_replicas_is_recommend_from_the_sources_current_count(bundle):
    runtime = TenantRuntime(bundle)
    samples = runtime.samples(NOW)
    current = _series(samples, CURRENT_REPLICAS)
    observed = observed_replicas(runtime.source, runtime.planner.targets["game-server"], NOW.floor("5min"), runtime.step)
    assert current == observed
    answer = runtime.recommend("game-server", int(current), now=NOW)
    assert _series(samples, DESIRED_REPLICAS) == answer["replicas"]
    assert answer["current_replicas"] == current and 2 <= answer["replicas"] <= 200


def test_the_anomaly_score_is_also_served_as_the_guide_s_z_score(bundle):
    runtime = TenantRuntime(bundle)
    samples = runtime.samples(NOW)
    scores = {s.labels["metric"]: s.value for s in samples if s.name == ANOMALY_SCORE}
    zscores = {s.labels["metric"]: s.value for s in samples if s.name == ANOMALY_ZSCORE}
    assert set(zscores) == set(scores) and scores
    for metric, score in scores.items():
        if not math.isnan(score):
            assert zscores[metric] == pytest.approx(score_to_z(score, runtime.detector.threshold, 2.5))


def test_without_a_count_from_the_source_the_last_published_answer_is_the_current_count(bundle):
    runtime = TenantRuntime(bundle)
    target = runtime.planner.targets["game-server"]
    runtime.planner.targets["game-server"] = target.model_copy(update={"current_replicas": None})
    first = runtime.desired_replicas("game-server", NOW.floor("5min"))
    assert first["current_replicas"] is None  # nothing read, nothing published yet: sized from the forecast
    later = NOW + pd.Timedelta("5min")
    second = runtime.desired_replicas("game-server", later.floor("5min"))
    assert second["current_replicas"] == first["replicas"]
    assert second == runtime.recommend("game-server", first["replicas"], now=later)


# ---- KEDA and the HPA against a running service --------------------------------------------------
def test_the_hpa_arithmetic_of_the_rendered_trigger_is_exactly_helios_answer(arena, trained_arena, embedded_store,  # noqa: F811
                                                                              tmp_path):
    scaled_object = yaml.safe_load(render(arena, IMAGE)["scaledobject-game-server.yaml"])
    primary = scaled_object["spec"]["triggers"][0]
    assert primary["name"] == "helios-desired-replicas"
    with bentoml_serve(tmp_path, "--arg", "tenants=arena") as service:
        def instant(query: str, at: str) -> float:
            response = service.get("/api/v1/query", params={"query": query, "time": at})
            assert response.status_code == 200, response.text
            (element,) = response.json()["data"]["result"]
            return float(element["value"][1])

        for _attempt in range(3):  # the three reads must fall in one 5-minute step
            step = pd.Timestamp.now(tz="UTC").floor("5min")
            at = pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # KEDA sends RFC 3339
            desired = instant(primary["metadata"]["query"], at)
            current = int(instant(primary["metadata"]["query"].replace(DESIRED_REPLICAS, CURRENT_REPLICAS), at))
            answer = service.post("/recommend", json={"service": "game-server", "current_replicas": current})
            if pd.Timestamp.now(tz="UTC").floor("5min") == step:
                break
        assert answer.status_code == 200, answer.text
        recommended = answer.json()["replicas"]
    assert hpa_desired(scaled_object, "helios-desired-replicas", desired, current) == desired == recommended
    assert 2 <= desired <= 200
    # Why not metricType Value: the HPA would multiply by the current size.
    as_value = scaled_object | {"spec": scaled_object["spec"] | {"triggers": [primary | {"metricType": "Value"}]}}
    # Helios asks for 10 replicas while 5 run: AverageValue gives ceil(10 / 1) = 10, Value ceil(10 / 1 * 5) = 50.
    assert hpa_desired(scaled_object, "helios-desired-replicas", 10, 5) == 10
    assert hpa_desired(as_value, "helios-desired-replicas", 10, 5) == 50


def test_the_hpa_model_matches_kubernetes_documented_examples():
    # The HPA page's example: 50 pods at 90 % against a 75 % target -> ceil(50 x 90 / 75) = 60
    # (as Value), outside the 10 % default tolerance; 100 pods at 105 % stay at 100 (inside it).
    spec = {"spec": {"minReplicaCount": 1, "maxReplicaCount": 1000,
                     "triggers": [{"name": "t", "metricType": "Value", "metadata": {"threshold": "75"}}]}}
    assert hpa_desired(spec, "t", 90, 50) == 60
    assert hpa_desired(spec, "t", 75 * 1.05, 100) == 100
    average = {"spec": spec["spec"] | {"triggers": [{"name": "t", "metricType": "AverageValue",
                                                      "metadata": {"threshold": "1"}}]}}
    assert hpa_desired(average, "t", 105, 100) == 100  # default tolerance: ignored
    tolerant_zero = {"spec": average["spec"] | {"advanced": {"horizontalPodAutoscalerConfig": {"behavior": {
        "scaleUp": {"tolerance": "0"}, "scaleDown": {"tolerance": "0"}}}}}}
    assert hpa_desired(tolerant_zero, "t", 105, 100) == 105
