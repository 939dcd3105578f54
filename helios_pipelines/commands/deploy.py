"""``helios deploy render <tenant>``: the integration guide's deploy files for one tenant.

Writes, from the templates in ``deploy/templates``: the Kubernetes Deployment and Service of the
tenant's Helios service (plus the guide's Service name ``helios-inference`` as an alias), a KEDA
ScaledObject per scaling target (primary trigger: ``helios_desired_replicas``, Helios' own answer;
the match queue from the customer's Prometheus as the guide's emergency trigger), the Grafana
dashboard and the alert ConfigMap.

Why the primary trigger is ``AverageValue`` with threshold 1 and a pass-through HPA behaviour: for an
external metric with an ``AverageValue`` target the HPA asks for ceil(value / target) replicas, so
target 1 asks for exactly Helios' count; with ``Value`` it would ask ceil(current x value / target),
a multiple of the current size. Helios already applied the stabilisation windows and rate limits of
the target's ``behaviour`` (and the anomaly hold) to that count, so the HPA's own behaviour is set
not to apply them twice (no stabilisation window, a policy as wide as max_replicas, tolerance 0:
the default 10 % tolerance would ignore a change from 100 to 105 replicas). The HPA takes the
largest count of all triggers, so the queue trigger can only add replicas in an emergency. Every interpolated value goes through ``tojson``, so a name or a
query never breaks the YAML it lands in.

Why the image is the champions' Bento and not ``latest``: the image tag is the version of the tenant's Bento
that serves its current champions (``bentoml containerize helios-<tenant>:<version>`` tags its image so), so
after a promotion or a rollback the re-rendered Deployment names another image and Kubernetes rolls the
pods; with ``latest`` the manifest never changed and the pods served whatever a node had pulled. No such
Bento is an error naming the command that builds it, not a fallback: ``latest`` is the bug, and a Bento
built at render time would be in no container registry. ``--image-tag`` names an image explicitly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import click
import yaml

from helios_pipelines.commands import tenant as load_tenant
from helios_pipelines.core.ml.anomaly_zscore import z_to_score
from helios_pipelines.core.settings import QUIET
from helios_pipelines.core.tenants import ScalingTarget, TenantConfig
from helios_pipelines.core.tenants.base import format_horizon
from helios_pipelines.core.tenants.source_configs import PrometheusSource

TEMPLATES = Path(__file__).resolve().parents[2] / "deploy" / "templates"
CONTAINER_PORT = 3000  # BentoML's default port inside the image
SERVICE_PORT = 8080  # the port the integration guide's KEDA triggers and Grafana use
GUIDE_SERVICE = "helios-inference"  # the Service name the integration guide's triggers and dashboard use
# The integration guide's match-queue trigger: the metric and the threshold that drive it.
QUEUE_METRIC = "queue_length"
QUEUE_THRESHOLD = "queue_length_scale_trigger"
# The gauge of free capacity reads the utilisation metric when the tenant has one.
UTILIZATION_METRIC = "server_utilization"


@dataclass(frozen=True)
class DeploySettings:
    """What differs per installation rather than per tenant."""

    namespace: str = "helios"
    workload_namespace: str = "default"
    image_registry: str = "gcr.io/YOUR_PROJECT"
    image_tag: str | None = None  # None: the version of the Bento serving the tenant's champions (champion_image_tag)
    prometheus_url: str = "http://prometheus.monitoring:9090"
    store_secret: str = "helios-store"  # the Secret holding the Helios store's URL, under database-url
    replicas: int = 2


class DeployError(RuntimeError):
    pass


def champion_image_tag(tenant: TenantConfig) -> str:
    """The version of the tenant's newest Bento serving its current champions: its image's tag."""
    from helios_pipelines.core.ml.tracking import Tracker
    from serving.packaging import PackagingError, champion_pins, champions_bento, pinned_versions

    tracker = Tracker()  # MLflow loads only when a render names no image

    try:
        bento = champions_bento(tenant, tracker)
    except PackagingError as exc:
        raise DeployError(f"{exc}; train it first: helios run {tenant.id}") from None
    if bento is None:
        champions = ", ".join(sorted(pinned_versions(champion_pins(tenant, tracker)).values()))
        raise DeployError(
            f"tenant '{tenant.id}': no Bento serves its current champions ({champions}). Build it with "
            f"`helios deploy build {tenant.id}` (the champion change sensor builds it after a promotion or rollback "
            f"when the Dagster daemon runs), containerize and push it, then render again; or name an image with --image-tag"
        )
    return bento.split(":", 1)[1]


def selector(name: str, labels: dict[str, str]) -> str:
    """An instant-vector selector: the form of a KEDA trigger on Helios (exactly one series)."""
    return name + "{" + ",".join(f'{key}="{value}"' for key, value in labels.items()) + "}"


def source_query(tenant: TenantConfig, metric: str) -> str:
    """The PromQL that reads a tenant metric from its own Prometheus."""
    config = tenant.metrics[metric]
    return config.query or config.series


def anomaly_threshold(tenant: TenantConfig) -> float:
    """The score at which the tenant's detector alerts (its ``anomaly_alert`` z-score on Helios' [0, 1] scale)."""
    from helios_pipelines.core.ml.training import tenant_detector

    return round(float(tenant_detector(tenant).threshold), 4)


def triggers(tenant: TenantConfig, target: ScalingTarget, helios_url: str, settings: DeploySettings) -> list[dict]:
    from serving.answers.series import DESIRED_REPLICAS

    found = [{
        # AverageValue: the HPA asks for ceil(helios_desired_replicas / 1) replicas (module docstring).
        "name": "helios-desired-replicas",
        "metric_type": "AverageValue",
        "server": helios_url,
        "threshold": "1",
        "query": selector(DESIRED_REPLICAS, {"customer": tenant.id, "service": target.service}),
    }]
    queue_threshold = getattr(tenant.thresholds, QUEUE_THRESHOLD, None)
    reads_prometheus = tenant.source.type in ("prometheus", "simulator")
    if QUEUE_METRIC in tenant.metrics and queue_threshold and reads_prometheus:
        found.append({
            "name": "match-queue",
            "server": prometheus_url(tenant, settings),
            "threshold": f"{queue_threshold:g}",
            "query": source_query(tenant, QUEUE_METRIC),
        })
    if reads_prometheus:
        for metric, config in tenant.metrics.items():
            if config.scale_trigger is None:
                continue
            try:  # the guide names the series; a tenant metric of that name reads through its query
                query = source_query(tenant, tenant.resolve_metric(config.scale_trigger.series))
            except KeyError:
                query = f"sum({config.scale_trigger.series})"
            found.append({
                "name": f"{metric.replace('_', '-')}-scale-trigger",
                "server": prometheus_url(tenant, settings),
                "threshold": f"{config.scale_trigger.above:g}",
                "query": query,
            })
    return found


def prometheus_url(tenant: TenantConfig, settings: DeploySettings) -> str:
    if isinstance(tenant.source, PrometheusSource) and tenant.source.url:
        return tenant.source.url
    return settings.prometheus_url


def secret_env(webhook: str, field: str) -> str:
    """Name of the Secret key (and environment variable) holding one receiver's URL or key."""
    return "HELIOS_WEBHOOK_" + "".join(c if c.isalnum() else "_" for c in webhook.upper()) + "_" + field


def alerts_document(tenant: TenantConfig) -> dict:
    webhooks = []
    for hook in tenant.alerts.webhooks:
        entry = {"name": hook.name, "type": hook.type, "url_env": hook.url_env or secret_env(hook.name, "URL"),
                 "events": list(hook.events)}
        if hook.type == "pagerduty":  # a literal routing key goes to the Secret too
            entry["routing_key_env"] = hook.routing_key_env or secret_env(hook.name, "ROUTING_KEY")
        if hook.secret_env:
            entry["signing_secret_env"] = hook.secret_env
        webhooks.append(entry)
    return {"tenant": tenant.id, "webhooks": webhooks, "thresholds": tenant.alerts.thresholds.model_dump()}


def forecast_panels(tenant: TenantConfig) -> list[dict]:
    from serving.answers.series import FORECAST_LOWER, FORECAST_UPPER, FORECAST_VALUE

    panels = []
    for metric, config in tenant.forecast_metrics.items():
        customer = {"customer": tenant.id, "metric": metric}
        # The actual line reads the customer's Prometheus; the forecasts read Helios (two data sources).
        targets = [{"expr": source_query(tenant, metric), "legend": f"Actual {metric}", "datasource": "prometheus"}]
        for minutes in sorted(config.forecast.horizons):
            labels = customer | {"horizon": format_horizon(minutes)}
            targets.append({"expr": selector(FORECAST_VALUE, labels), "legend": f"Predicted ({format_horizon(minutes)})",
                            "datasource": "helios"})
        longest = customer | {"horizon": format_horizon(max(config.forecast.horizons))}
        targets += [
            {"expr": selector(FORECAST_LOWER, longest), "legend": "80% interval, lower", "datasource": "helios"},
            {"expr": selector(FORECAST_UPPER, longest), "legend": "80% interval, upper", "datasource": "helios"},
        ]
        title = f"{metric} forecast ({', '.join(format_horizon(h) for h in sorted(config.forecast.horizons))})"
        panels.append({"title": title, "unit": config.unit or "short", "targets": targets})
    return panels


def render(tenant: TenantConfig, settings: DeploySettings = DeploySettings()) -> dict[str, str]:
    """File name -> content of every deploy file of the tenant; each is parsed once to prove it is
    well-formed before anyone applies it. Without ``settings.image_tag`` the image is the Bento serving
    the tenant's champions as the MLflow registry names them now (DeployError when none was built)."""
    import jinja2

    from helios_pipelines.core.ops.scorecard_store import SCORECARD_SERIES
    from serving.answers.series import ANOMALY_SCORE, RECOMMENDATION

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined, keep_trailing_newline=True
    )
    app = f"helios-{tenant.id}"
    image_tag = settings.image_tag or champion_image_tag(tenant)
    helios_url = f"http://{app}.{settings.namespace}:{SERVICE_PORT}"
    thresholds = tenant.alerts.thresholds
    values = {
        "tenant": tenant,
        "app": app,
        "namespace": settings.namespace,
        "workload_namespace": settings.workload_namespace,
        "labels": {"app": "helios-inference", "customer": tenant.id},
        "replicas": settings.replicas,
        "image": f"{settings.image_registry}/{app}:{image_tag}",
        "bento": f"{app}:{image_tag}",
        "container_port": CONTAINER_PORT,
        "service_port": SERVICE_PORT,
        "alias_of": None,
        "env": {
            "PROMETHEUS_URL": prometheus_url(tenant, settings),
            "HELIOS_ALERTS_FILE": "/etc/helios/alerts.yaml",
            "HELIOS_HOME": "/var/lib/helios",
            # read by OpenMP as xgboost loads: the service's forecasts run XGBoost (core/settings.py says why)
            "OMP_WAIT_POLICY": QUIET["OMP_WAIT_POLICY"],
        },
        "store_secret": settings.store_secret,
        "store_secret_key": "database-url",
        "delivery_labels": {"app": "helios-alert-delivery", "customer": tenant.id},
        "alert_configmap": f"helios-alerts-{tenant.id}",
        "alert_secret": f"helios-alerts-{tenant.id}",
        "alerts_yaml": yaml.safe_dump(alerts_document(tenant), sort_keys=False),
        "forecast_panels": forecast_panels(tenant),
        "anomaly_expr": selector(ANOMALY_SCORE, {"customer": tenant.id}),
        "anomaly_threshold": anomaly_threshold(tenant),
        # Yellow at the guide's z-score 2 (or 80 % of a lower anomaly_alert), on Helios' [0, 1] scale.
        "anomaly_warning": round(z_to_score(min(2.0, 0.8 * tenant.alerts.thresholds.anomaly_alert),
                                            anomaly_threshold(tenant), tenant.alerts.thresholds.anomaly_alert), 4),
        "recommendation_expr": selector(RECOMMENDATION, {"customer": tenant.id}),
        "scorecard_expr": selector(SCORECARD_SERIES, {"customer": tenant.id}) if tenant.scaling else None,
        "headroom_expr": f"1 - ({source_query(tenant, UTILIZATION_METRIC)})" if UTILIZATION_METRIC in tenant.metrics else None,
        "headroom_warning": round(1 - thresholds.capacity_warning, 4),
        "headroom_critical": round(1 - thresholds.capacity_critical, 4),
    }
    files = {
        "deployment.yaml": environment.get_template("deployment.yaml.j2").render(values),
        "alert-delivery.yaml": environment.get_template("alert-delivery.yaml.j2").render(values),
        "service.yaml": environment.get_template("service.yaml.j2").render(values),
        "alerts-configmap.yaml": environment.get_template("alerts-configmap.yaml.j2").render(values),
        "grafana-dashboard.json": environment.get_template("grafana-dashboard.json.j2").render(values),
    }
    for target in tenant.scaling:
        files[f"scaledobject-{target.service}.yaml"] = environment.get_template("scaledobject.yaml.j2").render(
            values | {"target": target, "triggers": triggers(tenant, target, helios_url, settings)}
        )
    files[f"service-{GUIDE_SERVICE}.yaml"] = environment.get_template("service.yaml.j2").render(
        values | {"app": GUIDE_SERVICE, "alias_of": app}
    )
    for name, text in files.items():
        json.loads(text) if name.endswith(".json") else yaml.safe_load(text)
    return files


@click.group("deploy")
def command() -> None:
    """Deploy files for a tenant: Kubernetes, KEDA, Grafana, alerts; the Bento their image is built from."""


@command.command("render")
@click.argument("tenant_id")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--namespace", default=DeploySettings.namespace, show_default=True, help="where Helios runs")
@click.option("--workload-namespace", default=DeploySettings.workload_namespace, show_default=True,
              help="where the scaled workloads (and so their ScaledObjects) live")
@click.option("--image-registry", default=DeploySettings.image_registry, show_default=True)
@click.option("--image-tag", default=None,
              help="the image's tag  [default: the version of the tenant's Bento serving its current champions]")
@click.option("--prometheus-url", envvar="PROMETHEUS_URL", default=DeploySettings.prometheus_url, show_default=True,
              help="the customer's Prometheus, unless the tenant's source names one")
@click.option("--store-secret", default=DeploySettings.store_secret, show_default=True,
              help="the Secret whose key database-url holds the Helios store's URL (PostgreSQL)")
@click.pass_context
def render_command(ctx: click.Context, tenant_id: str, out_dir: Path, **options) -> None:
    """Write the tenant's Deployment, Service, ScaledObjects, Grafana dashboard and alert ConfigMap."""
    tenant = load_tenant(ctx, tenant_id)
    try:
        files = render(tenant, DeploySettings(**options))
    except DeployError as exc:
        raise click.ClickException(str(exc)) from None
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (out_dir / name).write_text(text)
        click.echo(f"wrote {out_dir / name}")
    pod = yaml.safe_load(files["deployment.yaml"])["spec"]["template"]["spec"]
    click.echo(f"image {pod['containers'][0]['image']}: push it before applying")
    keys = [v for hook in alerts_document(tenant)["webhooks"] for k, v in hook.items() if k.endswith("_env")]
    if keys:
        click.echo(f"create the Secret helios-alerts-{tenant.id} in {options['namespace']} with: {', '.join(keys)}")


@command.command("build")
@click.argument("tenant_id")
@click.option("--rebuild", is_flag=True, help="build anew though a Bento serves these champions (after upgrading Helios)")
@click.pass_context
def build_command(ctx: click.Context, tenant_id: str, rebuild: bool) -> None:
    """Build the Bento serving the tenant's current champions with its current config (packed first unless
    they were), as the champion change sensor's run does; a Bento built for them before is reused."""
    from helios_pipelines.core.ml.tracking import Tracker
    from serving.packaging import PackagingError, build_bento, champions_bento, save_bento_model

    tenant = load_tenant(ctx, tenant_id)
    tracker = Tracker()
    try:
        bento = None if rebuild else champions_bento(tenant, tracker)
        if bento is None:
            bento = build_bento(tenant.id, save_bento_model(tenant, tracker))
    except PackagingError as exc:
        raise click.ClickException(f"{exc}; train it first: helios run {tenant_id}") from None
    click.echo(f"{bento}: push `bentoml containerize {bento}` to your registry, then helios deploy render {tenant_id}")
