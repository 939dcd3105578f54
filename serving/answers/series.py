"""The Prometheus series a served tenant exports: its forecasts at every configured horizon, its
anomaly scores and its replica recommendations. What /metrics exports and /api/v1/query answers
(KEDA's trigger and the Grafana dashboard read these)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from helios_pipelines.core.ml.anomaly_zscore import score_to_z
from helios_pipelines.core.ops.exposition import Sample
from helios_pipelines.core.tenants.base import format_horizon
from serving.answers import predict

if TYPE_CHECKING:
    from serving.runtime import TenantRuntime

FORECAST_VALUE = "helios_forecast_value"
FORECAST_LOWER = "helios_forecast_lower"
FORECAST_UPPER = "helios_forecast_upper"
ANOMALY_SCORE = "helios_anomaly_score"
ANOMALY_ZSCORE = "helios_anomaly_zscore"  # the same score as the guide's z-score (core/ml/anomaly_zscore.py)
RECOMMENDATION = "helios_recommendation"
# What KEDA's primary trigger scales on: /recommend's answer from the workload's current replica count.
DESIRED_REPLICAS = "helios_desired_replicas"
CURRENT_REPLICAS = "helios_current_replicas"


def samples(runtime: TenantRuntime, end: pd.Timestamp) -> list[Sample]:
    customer = {"customer": runtime.tenant_id}
    out: list[Sample] = []
    for metric, model in sorted(runtime.forecasters.items()):
        horizons = runtime.tenant.metrics[metric].forecast.horizons
        frame = predict.forecast(runtime, metric, max(horizons), end)
        for minutes in horizons:
            row = frame.iloc[predict.horizon_steps(runtime, model, minutes) - 1]
            labels = customer | {"metric": metric, "horizon": format_horizon(minutes)}
            out += [
                Sample(FORECAST_VALUE, labels, float(row["yhat"]), "Helios forecast of a metric at a horizon"),
                Sample(FORECAST_LOWER, labels, float(row["yhat_lower"]), "lower bound of the 80% interval"),
                Sample(FORECAST_UPPER, labels, float(row["yhat_upper"]), "upper bound of the 80% interval"),
            ]
    if runtime.detector is not None:
        for score in runtime.detect(now=end)["scores"]:
            value = float("nan") if score["score"] is None else score["score"]
            out.append(Sample(ANOMALY_SCORE, customer | {"metric": score["metric"]}, value, "anomaly score in [0, 1]"))
            z = score_to_z(value, runtime.detector.threshold, runtime.tenant.alerts.thresholds.anomaly_alert)
            out.append(Sample(ANOMALY_ZSCORE, customer | {"metric": score["metric"]}, z,
                              "the anomaly score as a z-score (anomaly_alert at the detector's threshold)"))
    if runtime.planner is not None:
        for service in sorted(runtime.planner.targets):
            replicas = runtime.recommend(service, now=end)["replicas"]
            out.append(Sample(RECOMMENDATION, customer | {"service": service}, float(replicas), "recommended replicas"))
            desired = runtime.desired_replicas(service, end)
            labels = customer | {"service": service}
            out.append(Sample(DESIRED_REPLICAS, labels, float(desired["replicas"]),
                              "replicas to run now: /recommend from the current replica count"))
            if desired["current_replicas"] is not None:
                out.append(Sample(CURRENT_REPLICAS, labels, float(desired["current_replicas"]),
                                  "replica count helios_desired_replicas started from"))
    return out
