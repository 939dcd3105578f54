"""`helios deploy render`: the files validate offline (Kubernetes schemas, KEDA's CRD) and every query
that reads Helios names a series Helios exports, with labels it sets."""

from __future__ import annotations

import json
import re

import jsonschema
import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from helios_pipelines.cli import main
from helios_pipelines.core.ops.scorecard_store import SCORECARD_SERIES
from helios_pipelines.core.tenants import load_tenants
from helios_pipelines.core.tenants.base import format_horizon
from serving.answers.series import (
    ANOMALY_SCORE,
    ANOMALY_ZSCORE,
    DESIRED_REPLICAS,
    FORECAST_LOWER,
    FORECAST_UPPER,
    FORECAST_VALUE,
    RECOMMENDATION,
)
from serving.promql import parse, selector_matchers, selectors
from tests.conftest import FIXTURE_TENANTS, SHARED

KUBERNETES_VERSION = "1.37.0"
KEDA_CRD = SHARED / "schemas" / "keda.sh_scaledobjects.yaml"
IMAGE_TAG = "v20261201"
# The labels serving/answers/series.py puts on each series it exports.
EXPORTED_LABELS = {
    FORECAST_VALUE: {"customer", "metric", "horizon"},
    FORECAST_LOWER: {"customer", "metric", "horizon"},
    FORECAST_UPPER: {"customer", "metric", "horizon"},
    ANOMALY_SCORE: {"customer", "metric"},
    ANOMALY_ZSCORE: {"customer", "metric"},
    RECOMMENDATION: {"customer", "service"},
    DESIRED_REPLICAS: {"customer", "service"},
    SCORECARD_SERIES: {"customer", "event", "start", "controller", "figure"},
}


@pytest.fixture(scope="module")
def gaming_corp():
    return load_tenants().get("gaming-corp")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = tmp_path_factory.mktemp("deploy")
    # An explicit image: the image of a tenant's champions is tests/serving/test_packaging.py's.
    result = CliRunner().invoke(main, ["deploy", "render", "gaming-corp", "--out", str(out), "--namespace", "helios",
                                       "--workload-namespace", "gaming", "--image-tag", IMAGE_TAG])
    assert result.exit_code == 0, result.output
    # The operator is told which Secret keys to create: the receiver's URL and its signing secret.
    assert "HELIOS_WEBHOOK_OPS_WEBHOOK_URL, HELIOS_WEBHOOK_SECRET" in result.output
    return out


@pytest.fixture(scope="module")
def scaled_object(rendered) -> dict:
    return yaml.safe_load((rendered / "scaledobject-game-server.yaml").read_text())


@pytest.fixture(scope="module")
def keda_schema() -> dict:
    if not KEDA_CRD.exists():
        pytest.skip(f"{KEDA_CRD} is absent (../shared not laid out)")
    crd = yaml.safe_load(KEDA_CRD.read_text())
    return next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")["schema"]["openAPIV3Schema"]


@pytest.mark.parametrize("name", ["deployment.yaml", "alert-delivery.yaml", "service.yaml", "service-helios-inference.yaml",
                                  "alerts-configmap.yaml"])
def test_kubernetes_objects_validate_against_the_kubernetes_schemas(rendered, name):
    document = yaml.safe_load((rendered / name).read_text())
    kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_the_validator_would_catch_a_broken_deployment(rendered):
    document = yaml.safe_load((rendered / "deployment.yaml").read_text())
    document["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_deployment_carries_the_guide_s_image_env_and_resources(rendered):
    deployment = yaml.safe_load((rendered / "deployment.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") or e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    # Only what the service reads (tests/serving/test_pod.py runs the pod with exactly this): the shared store
    # from a Secret, the alert ConfigMap as a file, scratch space, the tenant's Prometheus, and OpenMP's
    # passive waiting, which `make serve` exports too (XGBoost's threads must not spin on a shared node).
    assert env == {"HELIOS_DATABASE_URL": {"name": "helios-store", "key": "database-url"},
                   "HELIOS_ALERTS_FILE": "/etc/helios/alerts.yaml", "HELIOS_HOME": "/var/lib/helios",
                   "PROMETHEUS_URL": env["PROMETHEUS_URL"], "OMP_WAIT_POLICY": "PASSIVE"}
    assert container["image"] == f"gcr.io/YOUR_PROJECT/helios-gaming-corp:{IMAGE_TAG}"
    assert container["resources"] == {"requests": {"memory": "512Mi", "cpu": "250m"}, "limits": {"memory": "1Gi", "cpu": "500m"}}
    service = yaml.safe_load((rendered / "service.yaml").read_text())
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_without_an_image_tag_a_tenant_with_no_champion_is_an_error_naming_it(mlflow_uri, monkeypatch, tmp_path):
    """No champion, no Bento to name: the image is not `latest` (whatever a node pulled last)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)  # an empty registry
    result = CliRunner().invoke(main, ["deploy", "render", "gaming-corp", "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "tenant 'gaming-corp' has no champion yet" in result.output and "helios run gaming-corp" in result.output
    assert not (tmp_path / "out").exists()


def test_the_guide_s_service_name_reaches_the_same_pods(rendered):
    # The guide's KEDA serverAddress is http://helios-inference.helios:8080.
    deployment = yaml.safe_load((rendered / "deployment.yaml").read_text())
    alias = yaml.safe_load((rendered / "service-helios-inference.yaml").read_text())
    assert (alias["metadata"]["name"], alias["metadata"]["namespace"]) == ("helios-inference", "helios")
    assert alias["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert alias["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": "http"}]


def test_scaled_object_validates_against_keda_s_crd(scaled_object, keda_schema):
    jsonschema.validate(scaled_object, keda_schema)
    broken = scaled_object | {"spec": scaled_object["spec"] | {"minReplicaCount": "five"}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, keda_schema)


def test_scaled_object_scales_on_helios_desired_replicas_first(scaled_object, gaming_corp):
    target = gaming_corp.scaling[0]
    spec = scaled_object["spec"]
    assert spec["scaleTargetRef"]["name"] == target.service
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (target.min_replicas, target.max_replicas)
    assert [t["name"] for t in spec["triggers"]] == ["helios-desired-replicas", "match-queue"]
    assert all(t["type"] == "prometheus" for t in spec["triggers"])
    primary = spec["triggers"][0]
    # AverageValue with target 1: the HPA asks for ceil(value / 1), Helios' count itself.
    assert primary["metricType"] == "AverageValue"
    assert primary["metadata"] == {
        "serverAddress": "http://helios-gaming-corp.helios:8080", "threshold": "1",
        "query": 'helios_desired_replicas{customer="gaming-corp",service="game-server"}'}
    # The guide's emergency trigger reads the customer's own Prometheus.
    assert spec["triggers"][1]["metadata"] == {
        "serverAddress": "http://prometheus.monitoring:9090", "threshold": "50", "query": "sum(game_matches_in_queue)"}
    # Helios applied the target's behaviour already: the HPA's passes the answer through.
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    for direction in ("scaleUp", "scaleDown"):
        assert behavior[direction] == {"stabilizationWindowSeconds": 0, "tolerance": "0",
                                       "policies": [{"type": "Pods", "value": 3000, "periodSeconds": 15}]}


def parse_selector(query: str):
    return selector_matchers(parse(query))


def _helios_queries(rendered, scaled_object) -> list[str]:
    dashboard = json.loads((rendered / "grafana-dashboard.json").read_text())["dashboard"]
    helios = [t["expr"] for p in dashboard["panels"] for t in p["targets"]
              if t.get("datasource", p["datasource"])["uid"] == "${datasource}"]
    helios_server = [t["metadata"]["query"] for t in scaled_object["spec"]["triggers"]
                     if "helios-" in t["metadata"]["serverAddress"]]
    # Every selector of a query answered by Helios names one of its series.
    return helios_server + [s.prettify() for e in helios for s in selectors(parse(e))]


def test_every_helios_query_names_an_exported_series_with_its_labels(rendered, scaled_object, gaming_corp):
    queries = _helios_queries(rendered, scaled_object)
    assert len(queries) >= 3
    for query in queries:
        matchers = {m.label: m.value for m in parse_selector(query)}
        name = matchers.pop("__name__")
        assert name in EXPORTED_LABELS, query
        assert set(matchers) <= EXPORTED_LABELS[name], query
        assert matchers["customer"] == "gaming-corp"
        if "metric" in matchers:
            assert matchers["metric"] in gaming_corp.metrics
        if "horizon" in matchers:
            horizons = gaming_corp.metrics[matchers["metric"]].forecast.horizons
            assert matchers["horizon"] in {format_horizon(h) for h in horizons}


def test_keda_helios_queries_select_exactly_one_series(scaled_object):
    # KEDA fails on more than one series: a Helios trigger must pin every label of its series.
    for trigger in scaled_object["spec"]["triggers"]:
        if "helios-" not in trigger["metadata"]["serverAddress"]:
            continue
        matchers = {m.label for m in parse_selector(trigger["metadata"]["query"])} - {"__name__"}
        name = re.match(r"\w+", trigger["metadata"]["query"]).group(0)
        assert matchers == EXPORTED_LABELS[name]


def test_dashboard_has_the_guide_s_panels(rendered):
    dashboard = json.loads((rendered / "grafana-dashboard.json").read_text())["dashboard"]
    by_type = {}
    for panel in dashboard["panels"]:
        by_type.setdefault(panel["type"], []).append(panel["title"])
    assert "concurrent_users forecast (15m, 1h)" in by_type["timeseries"]
    assert by_type["stat"] == ["Anomaly Detection"]
    assert by_type["table"] == ["Scaling Recommendations", "Event Scorecards (Helios vs reactive HPA)"]
    assert by_type["gauge"] == ["Server Capacity Headroom"]


def test_alert_config_map_keeps_receivers_secret(rendered, gaming_corp):
    text = (rendered / "alerts-configmap.yaml").read_text()
    alerts = yaml.safe_load(yaml.safe_load(text)["data"]["alerts.yaml"])
    hook = gaming_corp.alerts.webhooks[0]
    assert hook.url not in text
    assert alerts["webhooks"][0] == {"name": "ops-webhook", "type": "webhook", "url_env": "HELIOS_WEBHOOK_OPS_WEBHOOK_URL",
                                     "events": list(hook.events), "signing_secret_env": "HELIOS_WEBHOOK_SECRET"}
    assert alerts["thresholds"] == gaming_corp.alerts.thresholds.model_dump()


def test_a_tenant_without_queue_or_utilisation_metrics_gets_only_what_applies(tmp_path):
    result = CliRunner().invoke(main, ["--config-dir", str(FIXTURE_TENANTS), "deploy", "render", "arena",
                                       "--out", str(tmp_path), "--image-tag", IMAGE_TAG])
    assert result.exit_code == 0, result.output
    scaled = yaml.safe_load((tmp_path / "scaledobject-game-server.yaml").read_text())
    # arena has a queue metric but no queue threshold: no queue trigger.
    assert [t["name"] for t in scaled["spec"]["triggers"]] == ["helios-desired-replicas"]
    panels = [p["title"] for p in json.loads((tmp_path / "grafana-dashboard.json").read_text())["dashboard"]["panels"]]
    assert "Server Capacity Headroom" not in panels
