"""A served tenant holds the history its champions need, so the detector served is the one backtested:
its weekly view compares a row with the same time one and two weeks before, so serving holds two weeks
(it held a day and its warm-up, and the weekly view was always NaN), while each step still fetches
only the recent day."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helios_pipelines.core.ml.models.detectors import make_detector
from helios_pipelines.core.ml.tracking import CHAMPION, Tracker, registered_model_name
from helios_pipelines.core.sources.base import MetricsSource
from serving.packaging import assemble_bundle, champion_pins
from serving.runtime import REFETCHED, TenantRuntime
from tests.conftest import AS_OF

SATURDAY = AS_OF + pd.Timedelta("1D")  # AS_OF is a Friday: Saturday 2026-11-21, 00:00 UTC, the served step
SCALE = {"concurrent_users": 1000.0, "queue_length": 20.0, "cpu_usage": 3.0}


class RepeatingWeek(MetricsSource):
    """Every metric repeats one week exactly: a daily wave, half as high again at weekends (UTC). From
    ``SATURDAY`` on concurrent_users lacks its weekend lift: it runs on as on a weekday, so its value,
    level and change are all known, and only the weekly view (the same time one and two weeks before)
    tells it from normal."""

    def fetch_series(self, metric, config, index):
        clock = (index.hour * 60 + index.minute).to_numpy() / 1440
        wave = SCALE[metric] * (2 + np.sin(2 * np.pi * clock))
        values = wave * np.where(index.dayofweek >= 5, 1.5, 1.0)
        if metric == "concurrent_users":
            values = np.where(index >= SATURDAY, wave, values)
        return pd.Series(values, index=index)

    def current_values(self, metrics=None):
        return {}

    def list_metrics(self):
        return [m.series for m in self.tenant.metrics.values()]


@pytest.fixture
def weekly(arena, mlflow_uri, tmp_path):
    """The arena tenant served from a bundle whose detector was fitted on three weeks of ``RepeatingWeek``."""
    source = RepeatingWeek(arena)
    history = source.fetch(AS_OF - pd.Timedelta("21D"), AS_OF)[sorted(arena.anomaly_metrics)]
    detector = make_detector("combined").fit(history)
    tracker = Tracker(mlflow_uri)
    name = registered_model_name(arena.id, "anomaly_detector")
    with tracker.start_run(arena.id, "weekly detector"):
        version = tracker.log_model(detector, name)
    tracker.set_alias(name, CHAMPION, version.version)
    bundle = assemble_bundle(arena, champion_pins(arena, tracker), tracker, tmp_path / "bundle")
    return TenantRuntime(bundle, source=source), source


def test_the_served_detect_scores_a_row_as_the_detector_scores_it_on_the_full_history(weekly):
    runtime, source = weekly
    week = 7 * 288  # rows of five minutes
    # two weeks of earlier rows remembered, with their level and change windows (20 rows)
    assert runtime.detector.manifest()["min_history"] == 20 and runtime.detector.full_history == 2 * week + 20

    served = {s["metric"]: s for s in runtime.detect(now=SATURDAY + pd.Timedelta("2min"))["scores"]}
    full = source.fetch(AS_OF - pd.Timedelta("21D"), SATURDAY + runtime.step)[runtime.detector.metrics_]
    offline = runtime.detector.score(full).loc[SATURDAY]
    assert {m: s["score"] for m, s in served.items()} == {m: float(offline[m]) for m in runtime.detector.metrics_}
    # the missing weekend lift is seen: a weekday's value, where a week and two weeks ago it was half as high again
    assert served["concurrent_users"]["score"] >= runtime.detector.threshold and served["concurrent_users"]["anomalous"]
    assert not served["cpu_usage"]["anomalous"] and not served["queue_length"]["anomalous"]


def test_the_history_held_covers_the_detectors_two_weeks_and_each_step_fetches_only_the_recent_day(weekly):
    runtime, source = weekly
    fetched: list[tuple[pd.Timestamp, pd.Timestamp]] = []
    fetch = source.fetch
    source.fetch = lambda start, end, *rest: fetched.append((start, end)) or fetch(start, end, *rest)
    first = runtime.step_end(SATURDAY)
    for k in range(3):
        runtime.history(SATURDAY + k * runtime.step)
    # on load: the detector's two weeks and 20 rows and the row itself, plus the day serving adds for gaps
    assert fetched[0] == (first - pd.Timedelta("14D105min") - pd.Timedelta("1D"), first + runtime.step)
    assert [(start, end - start) for start, end in fetched[1:]] == [
        (first + k * runtime.step - REFETCHED, REFETCHED + runtime.step) for k in (1, 2)]


def test_a_scrape_gap_at_the_served_step_answers_no_value_and_no_score_and_is_not_called_a_warm_up(weekly):
    runtime, source = weekly
    fetch_series = source.fetch_series
    source.fetch_series = lambda metric, config, index: fetch_series(metric, config, index).mask(index == SATURDAY)
    served = runtime.detect(now=SATURDAY + pd.Timedelta("2min"))["scores"]
    assert [(s["value"], s["score"], s["warming_up"], s["anomalous"]) for s in served] == [(None, None, False, False)] * 3
