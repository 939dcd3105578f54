"""What a served tenant can answer, without BentoML: loads a tenant bundle and answers predict,
detect and recommend. The BentoML service is a thin HTTP shell over this, and tests and notebooks
can use it directly.

A bundle is a directory with ``manifest.json`` and one Helios model directory per champion. The
manifest carries everything serving needs (the tenant's metrics, step, source, events, thresholds
and the pinned model versions): serving never reads ``configs/``.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from helios_pipelines.core.events import EventSchedule
from helios_pipelines.core.models.base import AnomalyDetector, Forecaster, SavableModel
from helios_pipelines.core.models.capacity import CapacityPlanner, observed_replicas
from helios_pipelines.core.sources import MetricsSource, make_source
from helios_pipelines.core.tenants import ScheduledEvent, TenantConfig, UnknownMetricError, format_horizon
from serving.promql import Sample

MANIFEST = "manifest.json"
FORECAST_VALUE = "helios_forecast_value"
FORECAST_LOWER = "helios_forecast_lower"
FORECAST_UPPER = "helios_forecast_upper"
ANOMALY_SCORE = "helios_anomaly_score"
RECOMMENDATION = "helios_recommendation"
# What KEDA's primary trigger scales on: /recommend's answer from the workload's current replica count.
DESIRED_REPLICAS = "helios_desired_replicas"
CURRENT_REPLICAS = "helios_current_replicas"
# Finished answers kept per step: one per (metric, horizon) or (service, current replicas) asked for.
# Clients choose current_replicas freely, so the cache is bounded rather than trusting them.
MAX_ANSWERS = 4096


class RequestError(ValueError):
    """A request the tenant cannot answer as asked; the message says what to change (HTTP 400)."""


class NotFoundError(KeyError):
    """An unknown metric, service or tenant (HTTP 404)."""

    def __str__(self) -> str:
        return self.args[0]


@dataclass(frozen=True)
class PinnedModel:
    name: str
    version: str
    kind: str

    def as_dict(self) -> dict:
        return {"name": self.name, "version": self.version, "kind": self.kind}


@dataclass(frozen=True)
class RecommendInputs:
    service: str
    metric: str
    upper_at_lead: float  # upper forecast quantile at the lead time
    upper_window_max: float  # its largest value over the lead time plus the scale-down window
    anomalous: bool  # the latest input point looks anomalous
    quantile_label: str
    target_time: str


class TenantRuntime:
    """One tenant's champions plus a short cache of its recent history."""

    def __init__(self, bundle_dir: str | Path, source: MetricsSource | None = None):
        bundle_dir = Path(bundle_dir)
        self.manifest = json.loads((bundle_dir / MANIFEST).read_text())
        self.tenant = TenantConfig.model_validate(self.manifest["tenant"])
        self.step = self.tenant.step_timedelta
        self.source = source or make_source(self.tenant)
        self.forecasters: dict[str, Forecaster] = {}
        self.pinned: dict[str, PinnedModel] = {}
        for metric, entry in self.manifest["forecasters"].items():
            self.forecasters[metric] = SavableModel.load(bundle_dir / entry["path"])
            self.pinned[metric] = PinnedModel(entry["name"], entry["version"], entry["kind"])
        detector = self.manifest.get("detector")
        self.detector: AnomalyDetector | None = SavableModel.load(bundle_dir / detector["path"]) if detector else None
        self.detector_pin = PinnedModel(detector["name"], detector["version"], detector["kind"]) if detector else None
        planner = self.manifest.get("planner")
        self.planner: CapacityPlanner | None = SavableModel.load(bundle_dir / planner["path"]) if planner else None
        self.planner_pin = PinnedModel(planner["name"], planner["version"], planner["kind"]) if planner else None
        self.posted_events: list[ScheduledEvent] = []
        self._history: pd.DataFrame | None = None
        self._history_end: pd.Timestamp | None = None
        self._per_step: dict[tuple, object] = {}  # per-step results: forecasts and detector scores
        # Finished predict and recommend answers of one step: a repeated request is a dict lookup.
        self._answers: dict[tuple, object] = {}
        self._answers_end: pd.Timestamp | None = None
        self._samples: list[Sample] = []
        self._samples_at: pd.Timestamp | None = None
        self._desired: dict[str, int] = {}  # last published desired replicas per service
        self._lock = threading.Lock()
        needed = [f.full_history for f in self.forecasters.values()]  # what the backtest forecast from
        if self.detector is not None:
            needed.append(self.detector.min_history)
        # Enough rows for every model, plus a day so gaps at the start do not starve them.
        self.history_span = self.step * (max(needed, default=1) + 1) + pd.Timedelta("1D")

    @property
    def tenant_id(self) -> str:
        return self.tenant.id

    # ---- history -------------------------------------------------------------------------------
    def history(self, now: pd.Timestamp | None = None) -> pd.DataFrame:
        """Recent history up to the last complete step, fetched at most once per step."""
        end = (now or pd.Timestamp.now(tz="UTC")).floor(self.step)
        with self._lock:
            if self._history is None or self._history_end != end:
                self._history = self.source.fetch(end - self.history_span, end + self.step)
                self._history_end = end
            return self._history

    def step_end(self, now: pd.Timestamp | None = None) -> pd.Timestamp:
        """The last complete step: every answer is the same from one step boundary to the next."""
        return (now or pd.Timestamp.now(tz="UTC")).floor(self.step)

    def cached_answer(self, kind: str, *request, now: pd.Timestamp | None = None) -> dict | None:
        """This step's finished answer to ``kind`` ("predict" or "recommend") with these arguments,
        or None when it has not been computed yet (or the request is an error)."""
        answer = self._answers.get(self._answer_key(kind, request, self.step_end(now)))
        return None if answer is None else dict(answer)

    def _answer_key(self, kind: str, request: tuple, end: pd.Timestamp) -> tuple:
        # Posted events are only ever appended, so their count says which forecasts they shaped.
        return (kind, *request, end, len(self.posted_events))

    def _remember(self, key: tuple, answer: object) -> None:
        end = key[-2]
        with self._lock:
            if self._answers_end != end or len(self._answers) >= MAX_ANSWERS:
                self._answers = {}  # a new dict, so lock-free readers never see one being cleared
                self._answers_end = end
            self._answers[key] = answer

    def metric(self, name: str) -> str:
        try:
            return self.tenant.resolve_metric(name)
        except UnknownMetricError as exc:
            raise NotFoundError(str(exc)) from None

    def events(self) -> EventSchedule:
        return EventSchedule(self.tenant.events).with_events(self.posted_events)

    def post_event(self, event: ScheduledEvent) -> dict:
        """An upcoming event (a tournament the tenant just announced): every forecast from now on
        honours it, and so does every recommendation built on them."""
        for name in event.metrics:
            self.metric(name)
        self.posted_events.append(event)
        upcoming = self.events().occurrences(pd.Timestamp.now(tz="UTC"), pd.Timestamp.now(tz="UTC") + pd.Timedelta("90D"))
        return {
            "tenant": self.tenant_id,
            "posted": event.model_dump(mode="json"),
            "upcoming": [{"name": o.name, "kind": o.kind, "start": o.start.isoformat(), "end": o.end.isoformat(),
                          "multiplier": o.multiplier} for o in upcoming],
        }

    # ---- predict -------------------------------------------------------------------------------
    def forecaster(self, metric: str) -> Forecaster:
        forecaster = self.forecasters.get(metric)
        if forecaster is None:
            raise NotFoundError(
                f"tenant '{self.tenant_id}' has no forecast model for '{metric}'; "
                f"forecast metrics: {', '.join(sorted(self.forecasters)) or '(none)'}"
            )
        return forecaster

    def horizon_steps(self, forecaster: Forecaster, horizon_minutes: int) -> int:
        if horizon_minutes <= 0:
            raise RequestError(f"horizon must be a positive number of minutes, got {horizon_minutes}")
        steps = math.ceil(pd.Timedelta(minutes=horizon_minutes) / self.step)
        if steps > forecaster.max_horizon:
            longest = int(forecaster.max_horizon * self.step.total_seconds() // 60)
            raise RequestError(
                f"horizon {horizon_minutes} min for '{forecaster.metric}' is beyond the {longest} min "
                f"its model was trained for"
            )
        return steps

    def forecast(
        self, metric: str, horizon_minutes: int, now: pd.Timestamp | None = None, level: float = 0.8
    ) -> pd.DataFrame:
        """The first ``horizon_minutes`` of the model's whole-horizon forecast from the last complete
        step. Within a step the answer cannot change, so it is computed once per step and level."""
        forecaster = self.forecaster(metric)
        steps = self.horizon_steps(forecaster, horizon_minutes)
        history = self.history(now)
        key = (metric, level, history.index[-1], len(self.posted_events))
        frame = self._per_step.get(key)
        if frame is None:
            series = history[metric]
            if series.notna().sum() < forecaster.min_history:
                raise RequestError(f"not enough recent history for '{metric}' to forecast from")
            # Events (configured and posted) are applied inside predict, as in the backtest.
            frame = forecaster.predict(forecaster.max_horizon, series, extra_events=self.posted_events, level=level)
            with self._lock:
                if len(self._per_step) > 256:  # old steps' forecasts are never asked for again
                    self._per_step.clear()
                self._per_step[key] = frame
        return frame.iloc[:steps]

    def predict(self, metric_name: str, horizon_minutes: int, now: pd.Timestamp | None = None) -> dict:
        end = self.step_end(now)
        key = self._answer_key("predict", (metric_name, horizon_minutes), end)
        answer = self._answers.get(key)
        if answer is None:
            answer = self._predict(metric_name, horizon_minutes, end)
            self._remember(key, answer)
        return dict(answer)

    def _predict(self, metric_name: str, horizon_minutes: int, end: pd.Timestamp) -> dict:
        metric = self.metric(metric_name)
        frame = self.forecast(metric, horizon_minutes, end)
        row = frame.iloc[-1]
        origin = frame["timestamp"].iloc[0] - self.step
        target = row["timestamp"]
        running = [o.name for o in self.events().occurrences(target, target + self.step) if o.applies_to(metric)]
        return {
            "tenant": self.tenant_id,
            "metric": metric,
            "series": self.tenant.metrics[metric].series,
            "horizon_minutes": horizon_minutes,
            "horizon": format_horizon(horizon_minutes),
            "origin": origin.isoformat(),
            "target_time": target.isoformat(),
            "value": float(row["yhat"]),
            "lower": float(row["yhat_lower"]),
            "upper": float(row["yhat_upper"]),
            "interval": 0.8,
            "unit": self.tenant.metrics[metric].unit,
            "events": running,
            "model": self.pinned[metric].as_dict(),
        }

    # ---- detect --------------------------------------------------------------------------------
    def detect(
        self,
        metric_names: list[str] | None = None,
        points: list[tuple[pd.Timestamp, float]] | None = None,
        now: pd.Timestamp | None = None,
        since: pd.Timestamp | None = None,
    ) -> dict:
        """Scores of the latest step, of client-given ``points``, or of every step after ``since``
        (scheduled detection catching up on the steps since its last look)."""
        if self.detector is None:
            raise NotFoundError(f"tenant '{self.tenant_id}' has no anomaly detector")
        watched = list(self.manifest["detector"]["metrics"])
        metrics = [self.metric(m) for m in metric_names] if metric_names else watched
        for metric in metrics:
            if metric not in watched:
                raise NotFoundError(
                    f"metric '{metric}' of tenant '{self.tenant_id}' is not watched for anomalies; "
                    f"watched: {', '.join(watched)}"
                )
        frame = self.history(now)[watched]
        scored_rows = frame.index[-1:] if since is None else frame.index[frame.index > since]
        if points:
            if len(metrics) != 1:
                raise RequestError("points can only be given for exactly one metric")
            frame, scored_rows = self._with_points(frame.copy(), metrics[0], points)
            all_scores, alert_state = self._score(frame)
        else:
            # The latest scores only change with the step: score the history once per step.
            key = ("detect", frame.index[-1])
            if key not in self._per_step:
                self._per_step[key] = self._score(frame)
            all_scores, alert_state = self._per_step[key]
        alerts = alert_state.loc[scored_rows]
        scores = all_scores.loc[scored_rows]
        threshold = float(self.detector.threshold)
        results = []
        for timestamp in scored_rows:
            for metric in metrics:
                score = scores.at[timestamp, metric]
                value = frame.at[timestamp, metric]
                results.append(
                    {
                        "metric": metric,
                        "timestamp": timestamp.isoformat(),
                        "value": None if pd.isna(value) else float(value),
                        "score": None if pd.isna(score) else float(score),
                        "anomalous": bool(alerts.at[timestamp, metric]),
                        "warming_up": bool(pd.isna(score)),
                    }
                )
        return {
            "tenant": self.tenant_id,
            "threshold": threshold,
            "scores": results,
            "model": self.detector_pin.as_dict(),
        }

    def _score(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        scores = self.detector.score(frame)
        # Alert state applies the tenant's trigger and recovery windows, not just the threshold.
        return scores, self.detector.alerts(scores)

    def _with_points(self, frame: pd.DataFrame, metric: str, points: list[tuple[pd.Timestamp, float]]):
        """Client-supplied values replace or extend the history on the tenant's grid."""
        stamps = []
        for timestamp, value in points:
            if value is None or not np.isfinite(value):
                raise RequestError(f"point at {timestamp} for '{metric}' is not a finite number")
            stamp = pd.Timestamp(timestamp)
            stamp = (stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")).floor(self.step)
            if stamp < frame.index[0]:
                raise RequestError(f"point at {stamp.isoformat()} is older than the history the detector keeps")
            if stamp not in frame.index:
                extra = pd.date_range(frame.index[-1] + self.step, stamp, freq=self.step)
                frame = pd.concat([frame, pd.DataFrame(index=extra, columns=frame.columns, dtype=float)])
            frame.loc[stamp, metric] = float(value)
            stamps.append(stamp)
        return frame, pd.DatetimeIndex(sorted(set(stamps)))

    # ---- recommend -----------------------------------------------------------------------------
    def recommend(
        self,
        service_or_metric: str | None = None,
        current_replicas: int | None = None,
        now: pd.Timestamp | None = None,
    ) -> dict:
        end = self.step_end(now)
        key = self._answer_key("recommend", (service_or_metric, current_replicas), end)
        answer = self._answers.get(key)
        if answer is None:
            inputs = self._recommend_inputs(service_or_metric, end)
            try:  # the planner bounds current_replicas and says so by name
                recommendation = self.planner.recommend(
                    inputs.service,
                    demand_upper=inputs.upper_at_lead,
                    demand_upper_window_max=inputs.upper_window_max,
                    current_replicas=current_replicas,
                    input_anomalous=inputs.anomalous,
                    quantile_label=inputs.quantile_label,
                )
            except ValueError as exc:
                raise RequestError(str(exc)) from None
            answer = {
                "tenant": self.tenant_id,
                **recommendation.to_dict(),
                "target_time": inputs.target_time,
                "forecast_model": self.pinned[inputs.metric].as_dict(),
            }
            self._remember(key, answer)
        return dict(answer)

    def _recommend_inputs(self, service_or_metric: str | None, end: pd.Timestamp) -> RecommendInputs:
        """What a service's recommendation takes from the forecast and the detector: the same for
        every ``current_replicas`` within a step, so computed once per step and service."""
        key = self._answer_key("recommend-inputs", (service_or_metric,), end)
        inputs = self._answers.get(key)
        if inputs is not None:
            return inputs
        if self.planner is None or not self.planner.targets:
            raise NotFoundError(f"tenant '{self.tenant_id}' has no scaling targets configured")
        if service_or_metric is None:
            if len(self.planner.targets) > 1:
                raise RequestError(f"name a service: {', '.join(sorted(self.planner.targets))}")
            service_or_metric = next(iter(self.planner.targets))
        try:
            target = self.planner.target(service_or_metric)
        except KeyError as exc:
            # The request may name the metric by its source series.
            try:
                target = self.planner.target(self.metric(service_or_metric))
            except (KeyError, NotFoundError):
                raise NotFoundError(str(exc.args[0])) from None
        forecaster = self.forecaster(target.metric)
        lead = self.planner.lead_time_minutes(target.service)
        window = lead + math.ceil(target.behaviour.scale_down_window_s / 60)
        longest = int(forecaster.max_horizon * self.step.total_seconds() // 60)
        lead, window = min(lead, longest), min(window, longest)
        # The upper bound of a central interval of level 2q-1 is the q-quantile.
        frame = self.forecast(target.metric, window, end, level=2 * target.quantile - 1)
        lead_steps = self.horizon_steps(forecaster, lead)
        anomalous = False
        if self.detector is not None and target.metric in self.manifest["detector"]["metrics"]:
            anomalous = self.detect([target.metric], now=end)["scores"][0]["anomalous"]
        inputs = RecommendInputs(
            service=target.service,
            metric=target.metric,
            upper_at_lead=float(frame["yhat_upper"].iloc[lead_steps - 1]),
            upper_window_max=float(frame["yhat_upper"].iloc[lead_steps - 1 :].max()),
            anomalous=anomalous,
            quantile_label=f"{target.quantile:.0%} quantile",
            target_time=frame["timestamp"].iloc[lead_steps - 1].isoformat(),
        )
        self._remember(key, inputs)
        return inputs

    def desired_replicas(self, service: str, end: pd.Timestamp) -> dict:
        """``/recommend``'s answer for ``service`` from the replica count the tenant's source reports
        (the last published answer when it reports none), so rate limits, stabilisation and the
        anomaly hold apply to what the cluster scales on."""
        current = observed_replicas(self.source, self.planner.targets[service], end, self.step)
        if current is None:
            current = self._desired.get(service)
        answer = self.recommend(service, current, now=end)
        self._desired[service] = answer["replicas"]
        return answer

    # ---- Prometheus series ---------------------------------------------------------------------
    def samples(self, now: pd.Timestamp | None = None) -> list[Sample]:
        """Every Helios series of this tenant, computed at most once per step: what /metrics exports
        and /api/v1/query answers (KEDA's trigger and the Grafana dashboard read these)."""
        end = (now or pd.Timestamp.now(tz="UTC")).floor(self.step)
        with self._lock:
            if self._samples_at == end:
                return self._samples
        customer = {"customer": self.tenant_id}
        out: list[Sample] = []
        for metric, forecaster in sorted(self.forecasters.items()):
            horizons = self.tenant.metrics[metric].forecast.horizons
            frame = self.forecast(metric, max(horizons), end)
            for minutes in horizons:
                row = frame.iloc[self.horizon_steps(forecaster, minutes) - 1]
                labels = customer | {"metric": metric, "horizon": format_horizon(minutes)}
                out += [
                    Sample(FORECAST_VALUE, labels, float(row["yhat"]), "Helios forecast of a metric at a horizon"),
                    Sample(FORECAST_LOWER, labels, float(row["yhat_lower"]), "lower bound of the 80% interval"),
                    Sample(FORECAST_UPPER, labels, float(row["yhat_upper"]), "upper bound of the 80% interval"),
                ]
        if self.detector is not None:
            for score in self.detect(now=end)["scores"]:
                value = float("nan") if score["score"] is None else score["score"]
                out.append(Sample(ANOMALY_SCORE, customer | {"metric": score["metric"]}, value, "anomaly score in [0, 1]"))
        if self.planner is not None:
            for service in sorted(self.planner.targets):
                replicas = self.recommend(service, now=end)["replicas"]
                out.append(Sample(RECOMMENDATION, customer | {"service": service}, float(replicas), "recommended replicas"))
                desired = self.desired_replicas(service, end)
                labels = customer | {"service": service}
                out.append(Sample(DESIRED_REPLICAS, labels, float(desired["replicas"]),
                                  "replicas to run now: /recommend from the current replica count"))
                if desired["current_replicas"] is not None:
                    out.append(Sample(CURRENT_REPLICAS, labels, float(desired["current_replicas"]),
                                      "replica count helios_desired_replicas started from"))
        with self._lock:
            self._samples, self._samples_at = out, end
        return out
