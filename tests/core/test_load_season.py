"""A driver (the load a tenant scales on) against its own season on the tenant's clock (load_season)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from helios_pipelines.core.ml.models.detectors import make_detector
from helios_pipelines.core.ml.models.load_season import log_ratio_to_earlier_seasons
from helios_pipelines.core.ml.models.series_views import seasonal_difference

DAY = 144  # rows of ten minutes


def test_the_season_is_compared_on_the_tenants_clock_across_a_change_of_the_clocks():
    # London's clocks go back at 02:00 BST on 2026-10-25 (01:00 local happens twice). The load follows
    # the local hour: 10 + hour, so the same local time a week earlier always has the same value.
    index = pd.date_range("2026-10-12", "2026-11-03", freq="1h", tz="UTC")
    values = 10.0 + index.tz_convert("Europe/London").hour.to_numpy()
    week = pd.Timedelta("7D")
    ratio = pd.Series(log_ratio_to_earlier_seasons(values, index, week, 1, "Europe/London"), index)
    week_after = (index >= "2026-10-26") & (index < "2026-11-01")
    assert (ratio[week_after] == 0).all()
    # The week after the change looking back at the repeated 01:00 has no single earlier row.
    assert np.isnan(ratio[pd.Timestamp("2026-11-01 01:00", tz="UTC")])
    # Counted in rows (168 back), every hour of the week after the change is an hour off its pattern.
    in_rows = seasonal_difference(np.log(values), 168)
    assert (in_rows[week_after] != 0).all()


def test_of_two_earlier_seasons_the_closer_is_the_expectation():
    index = pd.date_range("2026-03-02", periods=3 * 24, freq="1h", tz="UTC")
    values = np.full(3 * 24, 100.0)
    values[24 + 5] = 25.0  # an outage yesterday at 05:00: today's 05:00 is compared with the day before
    values[2 * 24 + 6] = 50.0  # today's own drop at 06:00: half of both earlier days
    ratio = log_ratio_to_earlier_seasons(values, index, pd.Timedelta("1D"), 2, "UTC")
    assert ratio[2 * 24 + 5] == 0.0
    assert np.isclose(ratio[2 * 24 + 6], np.log(0.5))
    assert np.isnan(ratio[:24]).all()  # no earlier day


def load_and_cpu(days: int, seed: int) -> pd.DataFrame:
    """A daily load with multiplicative noise, and a CPU that follows it, every ten minutes."""
    rng = np.random.default_rng(seed)
    rows = days * DAY
    load = (1000 + 600 * np.sin(2 * np.pi * np.arange(rows) / DAY)) * np.exp(rng.normal(0, 0.03, rows))
    index = pd.date_range("2026-03-02", periods=rows, freq="10min", tz="UTC")
    return pd.DataFrame({"load": load, "cpu": 0.02 * load * np.exp(rng.normal(0, 0.03, rows))}, index=index)


OUTAGES = [5 * DAY + 60, 6 * DAY + 90, 7 * DAY + 30]  # 10:00, 15:00 and 05:00 on three days running


def with_outages() -> pd.DataFrame:
    frame = load_and_cpu(9, seed=21)
    for start in OUTAGES:
        frame.iloc[start : start + 3] /= 3  # the load (and the CPU that follows it) drops to a third
    return frame


def test_every_outage_of_the_load_is_news_however_many_came_before():
    frame = with_outages()
    fit = frame.iloc[: 4 * DAY]
    detector = make_detector("rarity", drivers=["load"]).fit(fit)
    assert list(detector.load_seasons_) == [0]  # the load repeats daily: its own day is its expectation
    scores = detector.score(frame)["load"].to_numpy()
    assert all(scores[start] >= 0.5 for start in OUTAGES)
    normal = np.ones(len(frame), bool)
    for start in OUTAGES:
        normal[start : start + 3 + 2] = False  # the outage and the first rows of its return
    normal[: 4 * DAY] = False
    assert np.nanmax(scores[normal]) < 0.5
    # The rarity views alone remember the first outage as seen before, and miss the last one.
    detector.load_seasons_ = {}
    assert detector.score(frame)["load"].to_numpy()[OUTAGES[-1]] < 0.5


def test_a_detector_pickled_before_the_loads_season_scores_as_it_did():
    frame = with_outages()
    detector = make_detector("rarity", drivers=["load"]).fit(frame.iloc[: 4 * DAY])
    state = {k: v for k, v in detector.__dict__.items() if k not in ("load_seasons_", "clock_change_rows_", "timezone")}
    pickled_before = type(detector).__new__(type(detector))
    pickled_before.__setstate__(state)
    without = make_detector("rarity", drivers=["load"]).fit(frame.iloc[: 4 * DAY])
    without.load_seasons_ = {}
    np.testing.assert_array_equal(pickled_before.score(frame).to_numpy(), without.score(frame).to_numpy())
    assert pickled_before.full_history == without.full_history
