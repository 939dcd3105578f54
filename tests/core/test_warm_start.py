"""#20.2, second half: a retrain on a moved window continues the champion's boosters (Helios'
forecaster) where that keeps its evaluation honest, records what it continued and saved, and a
configuration change fits from scratch.

Expected figures are hand arithmetic on the model's settings: a continued booster adds a quarter of a
cold fit's rounds (WARM_SHARE), so Helios' forecaster with 300 direct and 200 recursive rounds grows
2 x 300 + 2 x 200 = 1000 rounds cold (calibration and final models) and 2 x 75 + 2 x 50 = 250 warm.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helios_pipelines.core.ml.models.helios import HeliosForecaster
from helios_pipelines.core.ml.models.warm_start import MAX_TREES, WARM_SHARE
from helios_pipelines.core.ml.tracking import CHAMPION, Tracker, load_helios_model, registered_model_name
from helios_pipelines.core.ml.training import promote_forecasters, train_forecasters
from helios_pipelines.core.tenants import TenantConfig

STEP = pd.Timedelta("5min")
DAY = 288  # steps


def load(days: int, seed: int = 11) -> pd.Series:
    """A daily cycle plus noise at 5 minutes."""
    rng = np.random.default_rng(seed)
    index = pd.date_range("2026-05-04", periods=days * DAY, freq=STEP, tz="UTC")
    hours = np.arange(index.size) / 12
    return pd.Series(100 + 30 * np.sin(2 * np.pi * hours / 24) + rng.normal(0, 3, index.size), index=index, name="load")


def small(**kwargs) -> HeliosForecaster:
    """Helios' forecaster with few trees (quick fits): a cold fit grows 20 direct and 8 recursive rounds."""
    return HeliosForecaster(step=STEP, max_horizon=12, seed=5, n_estimators=20, recursive_estimators=8, **kwargs)


def test_a_continued_fit_adds_a_quarter_of_the_rounds_to_the_base_and_is_deterministic():
    series = load(4)
    base = small().fit(series.iloc[: 3 * DAY])
    first = small().continue_from(base).fit(series.iloc[DAY // 2 :])
    again = small().continue_from(base).fit(series.iloc[DAY // 2 :])

    assert first.warm_start_["warm"] is True
    assert first.booster_.num_boosted_rounds() == 20 + 5  # 20 x WARM_SHARE = 5 more
    assert first.calibration_booster_.num_boosted_rounds() == 20 + 5
    assert first.recursive_.booster_.num_boosted_rounds() == 8 + 2
    assert first.boosting_rounds_ == {"grown": 2 * 5 + 2 * 2, "cold": 2 * 20 + 2 * 8}
    assert first.scale_ == base.scale_  # the base's trees work in its units
    assert not hasattr(first, "base_")  # a saved model never carries its predecessor
    pd.testing.assert_frame_equal(first.predict(12, series), again.predict(12, series))


def test_a_base_that_saw_the_windows_future_is_refused_and_the_fit_is_the_cold_fit():
    series = load(4)
    later = small().fit(series)  # saw all four days
    window = series.iloc[: 3 * DAY]  # a backtest fold's training part: the base saw its test data
    offered = small().continue_from(later).fit(window)
    cold = small().fit(window)

    assert offered.warm_start_["warm"] is False
    assert "after this window's end" in offered.warm_start_["refused"]
    assert offered.booster_.num_boosted_rounds() == 20
    pd.testing.assert_frame_equal(offered.predict(12, window), cold.predict(12, window))


def test_a_base_whose_calibration_models_saw_the_new_calibration_slice_is_refused():
    series = load(4)
    base = small().fit(series.iloc[: 3 * DAY])
    # A much longer window ending a little later: its calibration slice (the last 20 %) starts before
    # the base's, so continued calibration boosters would be scored on what they were trained on.
    longer = pd.concat([load(3, seed=2).set_axis(series.index[: 3 * DAY] - pd.Timedelta(days=3)), series.iloc[: 3 * DAY + 12]])
    offered = small().continue_from(base).fit(longer)
    assert offered.warm_start_["warm"] is False
    assert "calibration slice" in offered.warm_start_["refused"]


def test_a_chain_of_warm_starts_is_refitted_from_scratch_once_the_base_holds_twice_a_cold_fits_trees():
    series = load(6)
    model = small().fit(series.iloc[: 3 * DAY])
    trees = [model.booster_.num_boosted_rounds()]
    for shift in range(1, 6):
        model = small().continue_from(model).fit(series.iloc[shift * 36 : 3 * DAY + shift * 36])
        trees.append(model.booster_.num_boosted_rounds())
    # 20, then +5 per warm start while the result stays within MAX_TREES x 20 = 40, then a cold 20.
    assert MAX_TREES == 2 and WARM_SHARE == 0.25
    assert trees == [20, 25, 30, 35, 40, 20]
    assert "refitted from scratch" in model.warm_start_["refused"]


def tenant(folds: int = 2) -> TenantConfig:
    return TenantConfig.model_validate({
        "id": "warm-arena",
        "name": "warm start",
        "step": "5min",
        "source": {"type": "simulator", "seed": 1},
        "metrics": {"load": {"series": "load", "forecast": {"horizons": ["1h"]}}},
        "training": {"history_days": 5, "backtest_folds": folds},
    })


@pytest.fixture(scope="module")
def retrained():
    """Helios against the baseline on five days, promoted; then a retrain on the window half a day
    later (data changed only); then one with a configuration change (one backtest fold) on that window."""
    series = load(6)
    first_window, moved = series.iloc[: 5 * DAY], series.iloc[DAY // 2 : DAY // 2 + 5 * DAY]
    tracker = Tracker()
    first = train_forecasters(tenant(), first_window.to_frame(), tracker, {}, candidates=("helios",))["load"]
    promote_forecasters(tenant(), {"load": first}, tracker)
    warm = train_forecasters(tenant(), moved.to_frame(), tracker, {}, candidates=("helios",))["load"]
    reconfigured = train_forecasters(tenant(folds=1), moved.to_frame(), tracker, {}, candidates=("helios",))["load"]
    return tracker, first, warm, reconfigured


@pytest.mark.slow  # trains a tenant's models more than once: the full tier (make test-fast skips it)
def test_a_retrain_on_a_moved_window_continues_the_champions_boosters_and_says_so(retrained):
    tracker, first, warm, _ = retrained
    name = registered_model_name("warm-arena", "forecaster", "load")
    assert first.winner == "helios" and first.warm_start is None
    assert tracker.version_by_alias(name, CHAMPION).version == first.version.version == "1"

    assert warm.fit_note.startswith("warm start of helios from champion v1 (data changed since champion v1")
    record = warm.warm_start
    assert record["champion_version"] == "1"
    # The champion saw the first fold's test data (its window ends after that fold's origin): that
    # fold is fitted cold; the second continues the first; the refit continues the champion.
    assert record["folds"][0].startswith("cold: champion v1 refused (the base saw data up to")
    assert record["folds"][1] == "continued fold 1"
    assert record["refit"] == "continued champion v1"
    # fold 1 cold (1000 rounds), fold 2 and the refit warm (250 each), against 3 x 1000 cold
    assert (record["boosting_rounds"], record["cold_boosting_rounds"]) == (1500, 3000)
    assert record["saved"] == "1500 of 3000 boosting rounds (50%)"
    # recorded on the version, and the version holds the continued model: 300 + 75 direct trees
    version = tracker.get_version(name, warm.version.version)
    assert version.tags.warm_start == record
    served = load_helios_model(name, warm.version.version, tracker)
    assert served.booster_.num_boosted_rounds() == 375
    assert served.warm_start_["warm"] is True
    # what only a warm start reads is not loaded where the model serves (the champion came back with it
    # from the registry for this retrain, or its refit would not have continued it)
    assert not hasattr(served, "calibration_booster_")


@pytest.mark.slow  # trains a tenant's models more than once: the full tier (make test-fast skips it)
def test_a_configuration_change_fits_from_scratch(retrained):
    tracker, _, _, reconfigured = retrained
    assert reconfigured.warm_start is None
    assert reconfigured.fit_note == "fitted (data and config changed since champion v1)"
    name = registered_model_name("warm-arena", "forecaster", "load")
    model = load_helios_model(name, reconfigured.version.version, tracker)
    assert model.warm_start_ is None
    assert model.booster_.num_boosted_rounds() == 300
