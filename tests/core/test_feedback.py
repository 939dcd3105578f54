"""The feedback loop: recording predictions off the request path, joining actuals, live accuracy."""

from __future__ import annotations

import threading
from datetime import timedelta

import pandas as pd
import pytest
from sqlalchemy import func, select

from helios_pipelines.core.ops.exposition import exposition
from helios_pipelines.core.ops.feedback import (
    PredictionRecorder,
    accuracy_samples,
    join_actuals,
    live_accuracy,
)
from helios_pipelines.core.ops.store.schema import ModelRecord, Prediction
from helios_pipelines.core.sources.base import MetricsSource
from helios_pipelines.core.sources.simulator import Simulator
from tests.harness.store_backends import NOW, add_customer, tenant_config

STEP = pd.Timedelta("5min")
DAY_ZERO = pd.Timestamp(NOW).normalize()


class DailyRampSource(MetricsSource):
    """value = 1000 + 10 x day number + minute of the day / 10: the same time a day earlier is exactly 10 less."""

    def fetch_series(self, metric, config, index):
        return pd.Series([truth(at) for at in index], index=index)

    def current_values(self, metrics=None):
        return {}

    def list_metrics(self):
        return [m.series for m in self.tenant.metrics.values()]


def truth(at: pd.Timestamp) -> float:
    return 1000 + 10 * (at.normalize() - DAY_ZERO).days + (at.hour * 60 + at.minute) / 10


def served(target: pd.Timestamp, value: float, horizon: int = 15, lower=None, upper=None, tenant="acme") -> dict:
    """A prediction as TenantRuntime.predict answers it."""
    return {
        "tenant": tenant, "metric": "concurrent_users", "horizon_minutes": horizon, "value": value,
        "origin": (target - pd.Timedelta(minutes=horizon)).isoformat(), "target_time": target.isoformat(),
        "lower": lower, "upper": upper, "interval": 0.8,
        "model": {"name": f"{tenant}_concurrent_users_forecaster", "version": "3", "kind": "xgboost"},
    }


def test_recorder_writes_every_prediction_in_batches_and_skips_unknown_tenants(store):
    add_customer(store, tenant_config())
    now = pd.Timestamp(NOW)
    with PredictionRecorder(store, batch_size=25, flush_interval=0.05) as recorder:
        threads = [
            threading.Thread(target=lambda k=k: [recorder.record(served(now + STEP * (k * 50 + i), 1.0)) for i in range(50)])
            for k in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        recorder.record(served(now, 1.0, tenant="stranger"))
    assert (recorder.written, recorder.failed, recorder.dropped) == (200, 1, 0)
    with store.transaction() as session:
        assert session.scalar(select(func.count()).select_from(Prediction)) == 200
        model = session.scalars(select(ModelRecord)).one()  # created once, shared by every row
        assert (model.version, model.kind, model.model_path) == ("3", "xgboost", "models:/acme_concurrent_users_forecaster/3")
        assert session.scalar(select(func.count()).where(Prediction.model_id == model.id)) == 200
    with pytest.raises(RuntimeError, match="closed"):
        recorder.record(served(now, 1.0))


def test_a_forecast_answered_many_times_is_queued_once_and_again_after_a_failed_write(store, monkeypatch):
    """#20.4: every /predict answer is recorded, but a step's answer is the same for every client."""
    add_customer(store, tenant_config())
    now = pd.Timestamp(NOW)
    batches: list[int] = []
    with PredictionRecorder(store, flush_interval=0.05) as recorder:
        write = recorder._write
        monkeypatch.setattr(recorder, "_write", lambda batch: batches.append(len(batch)) or write(batch))
        for _ in range(1000):  # a thousand clients, one step: two forecasts (15 and 60 minutes ahead)
            recorder.record(served(now, 1.0, horizon=15))
            recorder.record(served(now, 2.0, horizon=60))
        recorder.flush()
        assert sum(batches) == 2 and recorder.written == 2

        monkeypatch.setattr(recorder, "_write", lambda batch: 1 / 0)  # the store is down
        recorder.record(served(now + STEP, 3.0))
        recorder.flush()
        assert recorder.failed == 1
        monkeypatch.setattr(recorder, "_write", write)  # back: the next request queues the lost forecast again
        recorder.record(served(now + STEP, 3.0))
        recorder.flush()
    assert recorder.written == 3
    with store.transaction() as session:
        assert session.scalar(select(func.count()).select_from(Prediction)) == 3


def record_history(store, start: pd.Timestamp, count: int, error: float, horizon: int = 15) -> None:
    """Predictions every step from ``start``, off by ``error``, with an interval of +-1 around the forecast."""
    with PredictionRecorder(store, flush_interval=0.05) as recorder:
        for i in range(count):
            target = start + STEP * i
            forecast = truth(target) + error
            recorder.record(served(target, forecast, horizon, lower=forecast - 1, upper=forecast + 1))


def test_actuals_are_joined_once_the_target_has_passed(store):
    tenant = tenant_config()
    add_customer(store, tenant)
    start = pd.Timestamp(NOW).normalize()
    record_history(store, start, count=24, error=0.0)  # targets 00:00 .. 01:55
    now = start + pd.Timedelta("1h")
    joined = join_actuals(store, DailyRampSource(tenant), tenant, now=now.to_pydatetime())
    assert joined == 12  # 00:00 .. 00:55: one step must have passed since the target
    with store.transaction() as session:
        rows = session.execute(select(Prediction.timestamp, Prediction.actual_value, Prediction.seasonal_naive_value)
                               .order_by(Prediction.timestamp)).all()
    for at, actual, naive in rows[:12]:
        assert actual == pytest.approx(truth(pd.Timestamp(at)))
        assert naive == pytest.approx(actual - 10)
    assert all(actual is None for _, actual, _ in rows[12:])
    assert join_actuals(store, DailyRampSource(tenant), tenant, now=now.to_pydatetime()) == 0


def test_live_accuracy_per_window_and_its_prometheus_gauges(store):
    tenant = tenant_config()
    add_customer(store, tenant)
    start = pd.Timestamp(NOW).normalize()
    record_history(store, start, count=12, error=5.0)  # first hour: off by 5, outside its +-1 interval
    record_history(store, start + pd.Timedelta("1h"), count=12, error=0.5, horizon=60)  # second hour
    now = start + pd.Timedelta("2h")
    join_actuals(store, DailyRampSource(tenant), tenant, now=(now + STEP).to_pydatetime())

    rows = live_accuracy(store, "acme", window=timedelta(hours=1), windows=2, now=now.to_pydatetime())
    assert [(r.horizon_minutes, r.window_start, r.count) for r in rows] == [
        (15, start.to_pydatetime(), 12), (60, (start + pd.Timedelta("1h")).to_pydatetime(), 12)]
    first, second = rows
    assert first.mae == pytest.approx(5.0) and first.mase == pytest.approx(0.5) and first.coverage == 0.0
    assert second.mae == pytest.approx(0.5) and second.mase == pytest.approx(0.05) and second.coverage == 1.0
    assert second.nominal_coverage == pytest.approx(0.8)

    text = exposition(accuracy_samples("acme", rows))
    assert '# TYPE helios_live_mae gauge' in text
    assert 'helios_live_mae{customer="acme",horizon="1h",metric="concurrent_users"} 0.5' in text
    assert 'helios_live_coverage{customer="acme",horizon="15m",metric="concurrent_users"} 0.0' in text
    assert 'helios_live_mase{customer="acme",horizon="15m",metric="concurrent_users"} 0.5' in text


def test_actuals_come_from_the_tenants_real_source(store, arena):
    """The simulator behind the demo tenants: joined actuals are exactly what the source reports."""
    with store.transaction() as session:
        store.add_customer(session, arena)
    end = pd.Timestamp(NOW).floor(arena.step_timedelta)
    targets = [end - pd.Timedelta(minutes=5 * k) for k in range(1, 7)]
    with PredictionRecorder(store, flush_interval=0.05) as recorder:
        for target in targets:
            recorder.record(served(target, 1000.0, tenant="arena"))
    source = Simulator(arena, now=end)
    assert join_actuals(store, source, arena, now=end.to_pydatetime()) == len(targets)
    expected = source.fetch(min(targets), end, ["concurrent_users"])["concurrent_users"]
    with store.transaction() as session:
        joined = dict(session.execute(select(Prediction.timestamp, Prediction.actual_value)).all())
    for target in targets:
        assert joined[target.to_pydatetime()] == pytest.approx(expected[target])
