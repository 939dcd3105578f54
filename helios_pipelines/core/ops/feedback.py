"""The feedback loop: record served predictions, join the actuals later, measure live accuracy.

``PredictionRecorder.record`` is what serving calls on the request path: it only enqueues, and a
background thread writes batches to the store. ``join_actuals`` fills ``actual_value`` (and the
seasonal-naive value one day earlier) from the tenant's source once a target time has passed.
``live_accuracy`` then gives, per metric, horizon and time window:

- MAE;
- MASE: the MAE divided by the MAE the one-day seasonal-naive forecast made on the same target
  times (the scale the backtests use, measured on live data; below 1 beats the baseline);
- coverage: the share of actuals inside the forecast's 80% interval (0.8 when calibrated).

``accuracy_samples`` turns the newest window into Prometheus gauge samples for ``/metrics``.
"""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
from cachetools import LRUCache

from helios_pipelines.core.ops.exposition import Sample
from helios_pipelines.core.ops.store import Store, UnknownCustomerError
from helios_pipelines.core.ops.store.schema import utcnow
from helios_pipelines.core.sources import MetricsSource
from helios_pipelines.core.tenants import TenantConfig
from helios_pipelines.core.tenants.base import format_horizon

log = logging.getLogger(__name__)

SEASON = timedelta(days=1)
# Forecasts the recorder remembers having queued: a step's worth for many tenants. One it has forgotten
# is queued again and skipped by the store, so the bound costs a write, never a second row.
RECENT_FORECASTS = 4096


class PredictionRecorder:
    """Records ``TenantRuntime.predict`` answers off the request path, in batches.

    ``record`` never blocks and never raises on a database problem: when the queue is full (the
    store is down or slow) predictions are dropped and counted, because serving must not wait on
    telemetry. ``close`` writes what is queued.

    A forecast is queued once per tenant, metric, horizon and origin (the store keeps one row for it
    anyway, ``uq_predictions_forecast``): a step's /predict answer is the same for every client, and
    queuing each of a thousand answers a second filled the queue with copies (tens of MiB of the
    service's memory) and kept the writer thread converting and inserting them, competing with the
    requests for the GIL. A batch that fails is forgotten, so a later request queues it again.
    """

    def __init__(self, store: Store, batch_size: int = 200, flush_interval: float = 1.0, max_queued: int = 50_000):
        self.store, self.batch_size, self.flush_interval = store, batch_size, flush_interval
        self.written = self.dropped = self.failed = 0
        self._queue: queue.Queue[dict] = queue.Queue(maxsize=max_queued)
        self._queued: LRUCache[tuple, None] = LRUCache(RECENT_FORECASTS)  # queued or written lately
        self._queued_lock = threading.Lock()  # LRUCache is not thread-safe: requests and the publisher record
        self._closed = threading.Event()
        self._model_ids: dict[tuple, uuid.UUID] = {}
        self._thread = threading.Thread(target=self._run, name="prediction-recorder", daemon=True)
        self._thread.start()

    def record(self, prediction: dict) -> None:
        if self._closed.is_set():
            raise RuntimeError("the prediction recorder is closed")
        key = _forecast_key(prediction)
        with self._queued_lock:
            if key in self._queued:
                return
            self._queued[key] = None
        try:
            self._queue.put_nowait(prediction)
        except queue.Full:
            self._forget([prediction])
            self.dropped += 1

    def flush(self) -> None:
        """Wait until everything recorded so far is written (or has failed)."""
        self._queue.join()

    def close(self) -> None:
        self._closed.set()
        self._thread.join()

    def __enter__(self) -> PredictionRecorder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _run(self) -> None:
        while not (self._closed.is_set() and self._queue.empty()):
            try:
                batch = [self._queue.get(timeout=self.flush_interval)]
            except queue.Empty:
                continue
            while len(batch) < self.batch_size:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self.written += self._write(batch)
            except Exception:  # a lost batch must not kill the thread that writes the next ones
                self.failed += len(batch)
                self._forget(batch)
                log.exception("prediction recorder: could not write %d predictions", len(batch))
            finally:
                for _ in batch:
                    self._queue.task_done()

    def _forget(self, predictions: list[dict]) -> None:
        with self._queued_lock:
            for prediction in predictions:
                self._queued.pop(_forecast_key(prediction), None)

    def _write(self, batch: list[dict]) -> int:
        rows: list[dict] = []
        with self.store.transaction() as session:
            for p in batch:
                try:
                    customer_id = self.store.customer_id(p["tenant"])
                except UnknownCustomerError as exc:
                    self.failed += 1
                    log.warning("prediction recorder: %s", exc)
                    continue
                model = p.get("model") or {}
                model_id = None
                if model:
                    key = (customer_id, model["name"], str(model["version"]))
                    if key not in self._model_ids:
                        self._model_ids[key] = self.store.model_id(
                            session, customer_id, model["name"], str(model["version"]), "forecaster", model.get("kind"))
                    model_id = self._model_ids[key]
                rows.append({
                    "customer_id": customer_id,
                    "timestamp": pd.Timestamp(p["target_time"]).to_pydatetime(),
                    "issued_at": pd.Timestamp(p["origin"]).to_pydatetime(),
                    "metric_name": p["metric"],
                    "horizon_minutes": int(p["horizon_minutes"]),
                    "predicted_value": float(p["value"]),
                    "lower_value": p.get("lower"),
                    "upper_value": p.get("upper"),
                    "interval_level": p.get("interval"),
                    "model_id": model_id,
                    "created_at": utcnow(),
                })
            # A forecast another replica (or an earlier request) already recorded is skipped.
            return self.store.insert_predictions(rows, session)


def _forecast_key(prediction: dict) -> tuple:
    """What makes a recorded forecast one row of the store (``uq_predictions_forecast``)."""
    return prediction["tenant"], prediction["metric"], int(prediction["horizon_minutes"]), prediction["origin"]


def join_actuals(store: Store, source: MetricsSource, tenant: TenantConfig, now: datetime | None = None,
                 lookback: timedelta = timedelta(days=2)) -> int:
    """Fill the actual (and the seasonal-naive value a day earlier) of predictions whose target has passed.

    A target counts as passed one step after it, when its sample is complete. Targets older than
    ``lookback`` that still have no actual (a gap in the source) are given up on. Returns how many
    predictions got their actual.
    """
    now = pd.Timestamp(now or utcnow())
    step = tenant.step_timedelta
    customer_id = store.customer_id(tenant.id)
    with store.transaction() as session:
        pending = store.predictions_awaiting_actuals(
            session, customer_id, since=(now - lookback).to_pydatetime(), until=(now - step).to_pydatetime())
        if not pending:
            return 0
        frame = pd.DataFrame(pending, columns=["id", "metric", "timestamp"])
        frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
        updates = []
        for metric, rows in frame.groupby("metric"):
            if metric not in tenant.metrics:
                continue  # a metric since removed from the config: nothing to join it with
            start, end = rows["timestamp"].min() - SEASON, rows["timestamp"].max() + step
            series = source.fetch(start, end, [metric])[metric]
            actual = series.reindex(rows["timestamp"].dt.floor(step)).to_numpy()
            naive = series.reindex((rows["timestamp"] - SEASON).dt.floor(step)).to_numpy()
            for row_id, value, baseline in zip(rows["id"], actual, naive, strict=True):
                if np.isfinite(value):
                    updates.append({"id": int(row_id), "actual_value": float(value),
                                    "seasonal_naive_value": float(baseline) if np.isfinite(baseline) else None})
        store.record_actuals(session, updates)
        return len(updates)


@dataclass(frozen=True)
class AccuracyRow:
    metric: str
    horizon_minutes: int
    window_start: datetime
    window_end: datetime
    count: int
    mae: float
    mase: float | None  # None when no seasonal-naive value is known (or its error is zero)
    coverage: float | None  # None when no prediction carried an interval
    nominal_coverage: float | None


def live_accuracy(store: Store, tenant_id: str, window: timedelta = timedelta(days=1), windows: int = 1,
                  now: datetime | None = None) -> list[AccuracyRow]:
    """Accuracy of predictions whose actual is known, per metric, horizon and window, oldest window first.

    Windows are ``window`` long and end at ``now``; a prediction belongs to the window of its target time.
    """
    now = pd.Timestamp(now or utcnow())
    start = now - window * windows
    customer_id = store.customer_id(tenant_id)
    found = store.predictions_with_actuals(customer_id, start.to_pydatetime(), now.to_pydatetime())
    columns = ["metric", "horizon", "timestamp", "predicted", "actual", "lower", "upper", "level", "naive"]
    frame = pd.DataFrame(found, columns=columns)
    if frame.empty:
        return []
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    frame["window"] = ((frame["timestamp"] - start) // pd.Timedelta(window)).astype(int)
    rows = []
    for (metric, horizon, index), group in frame.groupby(["metric", "horizon", "window"], sort=True):
        error = (group["actual"] - group["predicted"]).abs().astype(float)
        naive_error = (group["actual"] - group["naive"]).abs().astype(float).dropna()
        scale = naive_error.mean() if len(naive_error) else 0.0
        with_interval = group.dropna(subset=["lower", "upper"])
        inside = (with_interval["actual"] >= with_interval["lower"]) & (with_interval["actual"] <= with_interval["upper"])
        rows.append(AccuracyRow(
            metric=metric,
            horizon_minutes=int(horizon),
            window_start=(start + window * index).to_pydatetime(),
            window_end=(start + window * (index + 1)).to_pydatetime(),
            count=len(group),
            mae=float(error.mean()),
            mase=float(error[naive_error.index].mean() / scale) if scale > 0 else None,
            coverage=float(inside.mean()) if len(with_interval) else None,
            nominal_coverage=float(with_interval["level"].mean()) if len(with_interval) else None,
        ))
    return sorted(rows, key=lambda r: (r.window_start, r.metric, r.horizon_minutes))


GAUGES = {
    "helios_live_mae": "Mean absolute error of served forecasts over the latest window, in the metric's unit",
    "helios_live_mase": "MAE over the seasonal-naive MAE on the same targets (below 1 beats the baseline)",
    "helios_live_coverage": "Share of actuals inside the served 80% interval",
    "helios_live_samples": "Predictions with a known actual in the latest window",
}


def accuracy_samples(tenant_id: str, rows: list[AccuracyRow]) -> list[Sample]:
    """Gauges of the newest window of each metric and horizon (``live_accuracy``'s last rows)."""
    latest: dict[tuple[str, int], AccuracyRow] = {}
    for row in rows:
        latest[(row.metric, row.horizon_minutes)] = row  # rows come oldest window first
    samples = []
    for (metric, horizon), row in sorted(latest.items()):
        labels = {"customer": tenant_id, "metric": metric, "horizon": format_horizon(horizon)}
        values = {"helios_live_mae": row.mae, "helios_live_mase": row.mase,
                  "helios_live_coverage": row.coverage, "helios_live_samples": row.count}
        samples += [Sample(name, labels, float(v), GAUGES[name]) for name, v in values.items() if v is not None]
    return samples
