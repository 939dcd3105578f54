"""The forecast-residual view of the detector (#17.1, ``models/residual.py``): a ramp the forecast
expected is not an anomaly, and an incident during it is still found."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helios_pipelines.core.ml.models.detectors import CombinedDetector
from helios_pipelines.core.ml.models.residual import SeasonalResidual

STEP = pd.Timedelta("5min")
DAY = 288  # rows of five minutes
WEEK = 7 * DAY
NOISE = 10.0


def growing_game(weeks: int, seed: int = 5) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Players of a game growing 30 % a week over ``weeks`` weeks: a daily wave, and every Saturday a
    tournament nobody configured (30-minute linear ramps either side of an hour at three times the
    load, at the daily peak). Also the load without the tournament and which rows it covers."""
    rows = weeks * WEEK
    index = pd.date_range("2026-01-05", periods=rows, freq=STEP, tz="UTC")  # a Monday
    base = (1000 + 300 * np.sin(2 * np.pi * np.arange(rows) / DAY)) * 1.3 ** (np.arange(rows) / WEEK)
    minutes = (index - index.normalize()).total_seconds().to_numpy() / 60
    # 05:30-06:00 ramps up, 06:00-07:00 at x3, 07:00-07:30 back down.
    ramp = np.clip(np.minimum(minutes - 5.5 * 60, 7.5 * 60 - minutes) / 30, 0, 1)
    multiplier = np.where(index.dayofweek == 5, 1 + 2 * ramp, 1.0)
    players = base * multiplier + np.random.default_rng(seed).normal(0, NOISE, rows)
    return pd.DataFrame({"players": players}, index=index), base, multiplier > 1


def test_a_ramp_the_forecast_expected_is_not_an_anomaly_and_an_incident_during_it_is_still_found():
    frame, base, tournament = growing_game(5)
    last_week = np.arange(len(frame)) >= 4 * WEEK
    detector = CombinedDetector().fit(frame[~last_week])
    assert detector.rarity.seasons_ == [(0, WEEK)]  # a week repeats: the forecast starts from last week
    residual, values = detector.residual_, frame["players"].to_numpy()

    # This week's tournament is the biggest yet: the rarity views alone would page for its peak.
    ramp = last_week & tournament
    assert np.nanmax(detector.rarity.score_matrix(frame)[ramp, 0]) >= 0.5
    # The forecast expected it: last week's value times the growth since (the mean of the 20 rows
    # before the row over the same a week earlier). Its error is a value's noise and last week's
    # grown 30 %, sd 10 x sqrt(1 + 1.3^2) = 16.4, a little more with the levels' own noise: the 80 %
    # interval is about +-1.28 x 17 = +-21.5. All three weeks of residuals less 20 rows are judged
    # (evidence 1), each fifth (1206) by the interval of the rest (4822): off 80 % by sampling alone,
    # sd sqrt(0.16 / 1206 + 0.16 / 4822) = 0.013, on average 0.8 x 0.013 = 0.010: a weight near
    # 1 - 0.010 / 0.2 = 0.95.
    row = int(np.flatnonzero(ramp)[10])
    growth = values[row - 20: row].mean() / values[row - WEEK - 20: row - WEEK].mean()
    assert residual.forecast(values[:, None])[row, 0] == pytest.approx(values[row - WEEK] * growth, rel=1e-12)
    assert 19 < residual.upper_[0] < 24 and -24 < residual.lower_[0] < -19
    assert 0.9 < residual.weight_[0] <= 1
    scores = detector.score(frame)["players"].to_numpy()
    assert np.nanmax(scores[ramp]) < detector.threshold
    assert np.nanmax(scores[last_week]) < detector.threshold

    # An incident during it: half the tournament's load again at 06:00, 1.5 x 4,490 = 6,735 players
    # above the forecast, about 6,735 / 21.5 = 313 half-widths.
    incident = ramp & (frame.index.hour == 6) & (frame.index.minute < 20)  # 4 rows
    broken = frame.copy()
    broken.loc[incident, "players"] += 1.5 * base[incident]
    start = int(np.flatnonzero(incident)[0])
    assert 4400 < base[start] < 4600
    z = residual.standardised(broken.to_numpy())[:, 0]
    assert 280 < z[start] < 340
    scores = detector.score(broken)
    assert scores["players"].iloc[start] >= detector.threshold
    alerts = detector.alerts(scores, broken)["combined"].to_numpy()
    assert alerts[start] and not alerts[last_week & ~tournament].any()


def test_a_weekly_forecast_that_holds_through_two_weeks_of_history_has_nearly_full_say():
    # Two weeks of a weekly pattern (a daily wave, weekends at 60 %) with independent noise: the demo
    # tenants' history. The forecast starts a week and a level window in, so its residuals span a week
    # less 20 rows, 2016 - 20 = 1996 of them, all judged: evidence 1996 / 2016 = 0.990. Its interval holds
    # by construction, so each fifth's coverage (399 residuals, by the interval of the other 1597) is off
    # 0.8 by sampling alone, sd sqrt(0.16 / 399 + 0.16 / 1597) = 0.022, on average 0.8 x 0.022 = 0.018
    # (a normal's mean absolute deviation): 1 - 0.018 / 0.2 = 0.91 of the evidence, a weight about 0.9.
    rng = np.random.default_rng(0)
    rows = 2 * WEEK
    weekend = (np.arange(rows) // DAY) % 7 >= 5
    values = (1000 + 300 * np.sin(2 * np.pi * np.arange(rows) / DAY)) * np.where(weekend, 0.6, 1.0)
    values = values + rng.normal(0, NOISE, rows)
    residual = SeasonalResidual([(0, WEEK)], 1, 20).fit(values[:, None])
    assert np.isfinite(residual.standardised(values[:, None])[:, 0]).sum() == 1996
    assert 0.85 < residual.weight_[0] <= 1996 / 2016


def test_a_forecast_whose_interval_stops_holding_has_no_say():
    # A week that repeats at first and turns to noise for its last 30 % of residuals: the interval of
    # the other parts covers all of the first three fifths (miscoverage 0.2 each) and few of the last
    # (more than 0.2), so the mean miscoverage is over 0.2 and the weight 0 (pooled, the two would
    # cancel: a coverage of 0.73, a weight of 0.65). The rarity views' scores stand unchanged.
    rng = np.random.default_rng(8)
    rows = 3 * WEEK
    values = 1000 + 300 * np.sin(2 * np.pi * np.arange(rows) / DAY) + rng.normal(0, NOISE, rows)
    values[int(2.4 * WEEK):] += rng.normal(0, 30 * NOISE, rows - int(2.4 * WEEK))
    residual = SeasonalResidual([(0, WEEK)], 1, 20).fit(values[:, None])
    assert residual.weight_[0] == 0.0
    score = np.linspace(0, 1, rows)[:, None]
    np.testing.assert_array_equal(residual.veto(score, values[:, None], 2.5, 0.5), score)


def test_the_residual_view_is_causal_and_what_serving_holds_is_enough():
    frame, _, _ = growing_game(4)
    detector = CombinedDetector().fit(frame.iloc[: 3 * WEEK])
    residual, values = detector.residual_, frame.to_numpy()
    assert residual.reach == WEEK + 20 <= detector.full_history  # a week and the level window before it
    z = residual.standardised(values)
    held = values[-(DAY + residual.reach):]
    np.testing.assert_array_equal(residual.standardised(held)[-DAY:], z[-DAY:])
    prefix = values[: -DAY // 2]
    np.testing.assert_array_equal(residual.standardised(prefix), z[: len(prefix)])
    np.testing.assert_array_equal(detector.score(frame.iloc[: -DAY // 2]).to_numpy(),
                                  detector.score(frame).iloc[: -DAY // 2].to_numpy())


def test_a_detector_pickled_before_the_residual_view_scores_as_its_rarity_views_do():
    frame, _, tournament = growing_game(5)
    detector = CombinedDetector().fit(frame.iloc[: 4 * WEEK])
    del detector.__dict__["residual_"]  # what unpickling a detector saved before the view gives
    scores = detector.score(frame)["players"].to_numpy()
    rarity = detector.rarity.score_matrix(frame)[:, 0]
    np.testing.assert_array_equal(scores[detector.min_history:], rarity[detector.min_history:])
    assert np.nanmax(scores[4 * WEEK:][tournament[4 * WEEK:]]) >= detector.threshold  # the tournament pages again
    assert "forecast_weights" not in detector.manifest()


def test_a_row_without_a_forecast_keeps_the_rarity_views_score():
    # A scrape gap a week before a row leaves it without a forecast: nothing vetoes its page. A row with
    # a forecast that expected it (under 2 half-widths out: a residual score under 2 / 4.5 = 0.44) is vetoed to
    # the floor, 0.9 x 0.5 = 0.45, by the forecast's weight w: (1 - w) 0.9 + w 0.45.
    frame, _, _ = growing_game(5)
    detector = CombinedDetector().fit(frame.iloc[: 4 * WEEK])
    residual, values = detector.residual_, frame.to_numpy().copy()
    gap = 4 * WEEK + 100
    values[gap - WEEK] = np.nan
    pages = np.full(values.shape, 0.9)
    vetoed = residual.veto(pages, values, 2.5, 0.5)[:, 0]
    assert vetoed[gap] == 0.9
    w = residual.weight_[0]
    expected = np.abs(residual.standardised(values)[:, 0]) < 2
    expected[: 4 * WEEK] = False
    assert expected.sum() > 0.8 * WEEK
    np.testing.assert_allclose(vetoed[expected], (1 - w) * 0.9 + w * 0.45)
