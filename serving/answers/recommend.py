"""/recommend: replicas for a scaled service, with every step of the planner's arithmetic."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from helios_pipelines.core.ml.models.capacity import demand_to_size, observed_replicas
from helios_pipelines.core.ops.capacity_alerts import CapacityReading
from helios_pipelines.core.tenants.base import format_horizon
from serving.answers import detect, predict
from serving.errors import NotFoundError, RequestError

if TYPE_CHECKING:
    from serving.runtime import TenantRuntime


@dataclass(frozen=True)
class RecommendInputs:
    service: str
    metric: str
    demand: dict[str, float]  # what the planner sizes on (capacity.demand_to_size)
    anomalous: bool  # the latest input point looks anomalous
    quantile_label: str
    target_time: str


def recommend(runtime: TenantRuntime, service_or_metric: str | None, current_replicas: int | None,
              end: pd.Timestamp) -> dict:
    inputs = recommend_inputs(runtime, service_or_metric, end)
    try:  # the planner bounds current_replicas and says so by name
        recommendation = runtime.planner.recommend(
            inputs.service,
            **inputs.demand,
            current_replicas=current_replicas,
            input_anomalous=inputs.anomalous,
            quantile_label=inputs.quantile_label,
        )
    except ValueError as exc:
        raise RequestError(str(exc)) from None
    return {
        "tenant": runtime.tenant_id,
        **recommendation.to_dict(),
        "target_time": inputs.target_time,
        "forecast_model": runtime.pinned[inputs.metric].as_dict(),
        "planner_model": runtime.planner_pin.as_dict(),
    }


def desired_replicas(runtime: TenantRuntime, service: str, end: pd.Timestamp) -> dict:
    """``/recommend``'s answer for ``service`` from the replica count the tenant's source reports
    (the last published answer when it reports none), so rate limits, stabilisation and the
    anomaly hold apply to what the cluster scales on."""
    return dict(runtime.cache.get_or_compute(end, ("desired", service, runtime.events_version),
                                             lambda: _desired_replicas(runtime, service, end)))


def _desired_replicas(runtime: TenantRuntime, service: str, end: pd.Timestamp) -> dict:
    current = observed_replicas(runtime.source, runtime.planner.targets[service], end, runtime.step)
    if current is None:
        current = runtime.last_desired.get(service)
    answer = runtime.recommend(service, current, now=end)
    runtime.last_desired[service] = answer["replicas"]
    return answer


def capacity_readings(runtime: TenantRuntime, end: pd.Timestamp) -> list[CapacityReading]:
    """Per scaled service: the share of max capacity the forecast's upper bound (the published 80 %
    bound) needs at its peak within the metric's longest horizon, and the desired and current
    replicas: what the capacity and scaling alerts are decided on (core/ops/capacity_alerts.py)."""
    readings = []
    for service, target in sorted(runtime.planner.targets.items()):
        longest = max(runtime.tenant.metrics[target.metric].forecast.horizons)
        peak = float(predict.forecast(runtime, target.metric, longest, end)["yhat_upper"].max())
        desired = desired_replicas(runtime, service, end)
        readings.append(CapacityReading(service, runtime.planner.share_of_max_capacity(service, peak),
                                        format_horizon(longest), desired["replicas"], desired["current_replicas"]))
    return readings


def recommend_inputs(runtime: TenantRuntime, service_or_metric: str | None, end: pd.Timestamp) -> RecommendInputs:
    """What a service's recommendation takes from the forecast and the detector: the same for
    every ``current_replicas`` within a step, so computed once per step and service."""
    return runtime.cache.get_or_compute(
        end, ("recommend-inputs", service_or_metric, runtime.events_version),
        lambda: _recommend_inputs(runtime, service_or_metric, end),
    )


def _recommend_inputs(runtime: TenantRuntime, service_or_metric: str | None, end: pd.Timestamp) -> RecommendInputs:
    planner = runtime.planner
    if planner is None or not planner.targets:
        raise NotFoundError(f"tenant '{runtime.tenant_id}' has no scaling targets configured")
    if service_or_metric is None:
        if len(planner.targets) > 1:
            raise RequestError(f"name a service: {', '.join(sorted(planner.targets))}")
        service_or_metric = next(iter(planner.targets))
    try:
        target = planner.target(service_or_metric)
    except KeyError as exc:
        # The request may name the metric by its source series.
        try:
            target = planner.target(runtime.metric(service_or_metric))
        except (KeyError, NotFoundError):
            raise NotFoundError(str(exc.args[0])) from None
    model = predict.forecaster(runtime, target.metric)
    longest = int(model.max_horizon * runtime.step.total_seconds() // 60)
    lead = min(planner.lead_time_minutes(target.service), longest)
    # The upper bound of a central interval of level 2q-1 is the q-quantile.
    frame = predict.forecast(runtime, target.metric, lead, end, level=2 * target.quantile - 1)
    lead_steps = predict.horizon_steps(runtime, model, lead)
    demand = demand_to_size(frame["yhat"].to_numpy(), frame["yhat_upper"].to_numpy(), lead_steps)
    anomalous = False
    if runtime.detector is not None and target.metric in runtime.manifest["detector"]["metrics"]:
        anomalous = detect.detect(runtime, [target.metric], None, end)["scores"][0]["anomalous"]
    return RecommendInputs(
        service=target.service,
        metric=target.metric,
        demand=demand,
        anomalous=anomalous,
        quantile_label=f"{target.quantile:.0%} quantile",
        target_time=frame["timestamp"].iloc[lead_steps - 1].isoformat(),
    )
