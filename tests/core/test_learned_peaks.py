"""Learned recurring peaks (#19.1): found in the tenant's own history where the simulator puts them,
scored like events unless a scheduled event covers them, and none learned where nothing recurs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helios_pipelines.core.ml.events import EventSchedule
from helios_pipelines.core.ml.peaks import DAILY, KIND, learn_peaks
from helios_pipelines.core.ops.scorecard import UnfinishedEventError, UnknownEventError, find_occurrence
from helios_pipelines.core.sources.simulator import Simulator, history_window
from tests.conftest import AS_OF

NEW_YORK = "America/New_York"


@pytest.fixture(scope="module")
def gaming(demo_registry):
    return demo_registry.get("gaming-corp")


@pytest.fixture(scope="module")
def learned(gaming):
    """What training learns for gaming-corp as of Friday 2026-11-20: its 14 days of history."""
    start, end = history_window(gaming, AS_OF)
    return learn_peaks(gaming, Simulator(gaming, now=AS_OF).fetch(start, end))


def minutes_of_day(clock: str) -> int:
    hours, minutes = map(int, clock.split(":"))
    return 60 * hours + minutes


def test_the_weekly_tournament_is_learned_on_saturdays_where_the_config_puts_it(gaming, learned):
    # The YAML's tournament: Saturdays 14:00 UTC for 8 hours, i.e. 09:00 on the tenant's New York clock
    # in November (standard time); the simulator ramps it in and out over 30 minutes.
    assert gaming.timezone == NEW_YORK
    weekly = [p for p in learned.peaks if p.every != DAILY]
    assert [p.every for p in weekly] == ["Sat"]
    (tournament,) = weekly
    assert abs(minutes_of_day(tournament.start) - 9 * 60) <= 30
    assert abs(tournament.minutes - 8 * 60) <= 30
    assert tournament.ratio > 1.5 and tournament.seen == 1.0  # both Saturdays of the two weeks
    assert tournament.name == f"learned peak Sat {tournament.start}"


def test_the_daily_peak_is_the_crest_of_the_simulated_regions_evenings(gaming, learned):
    # The simulator's noiseless shape of the players (three regions' evenings on their own clocks) over
    # the same 14 days: the learned daily peak holds its crest, and its edges are within an hour of where
    # that shape crosses 1.2x its typical (median) level on an ordinary weekday (Wednesday 2026-11-18).
    start, end = history_window(gaming, AS_OF)
    index = pd.date_range(start, end, freq="1min", inclusive="left")
    shape = pd.Series(Simulator(gaming).regional_profile(index), index=index)
    wednesday = shape.tz_convert(NEW_YORK).loc["2026-11-18"]
    above = wednesday[wednesday >= 1.2 * shape.median()].index
    crest = wednesday.idxmax()
    daily = [p for p in learned.peaks if p.every == DAILY]
    assert len(daily) == 1
    (peak,) = daily
    begin = pd.Timestamp(f"2026-11-18 {peak.start}", tz=NEW_YORK)
    finish = begin + pd.Timedelta(minutes=peak.minutes)
    assert begin <= crest < finish
    assert abs(begin - above[0]) <= pd.Timedelta("1h") and abs(finish - above[-1]) <= pd.Timedelta("1h")
    assert peak.name == f"learned peak daily {peak.start}"
    assert "2 learned peak(s) in concurrent_users" in learned.note


def test_a_scheduled_event_wins_over_the_learned_peaks_it_covers(gaming, learned):
    # The week before Friday 2026-11-20: the learned tournament peak coincides with the YAML's tournament
    # every Saturday, so it has no occurrence of its own; the daily peak occurs on the six other days
    # (Saturday's evening is inside the tournament).
    week = learned.occurrences(AS_OF - pd.Timedelta("7D"), AS_OF, EventSchedule(gaming.events))
    assert {o.kind for o in week} == {KIND}
    daily = next(p for p in learned.peaks if p.every == DAILY)
    assert [o.name for o in week] == [daily.name] * 6
    assert [str(o.start.tz_convert(NEW_YORK).date()) for o in week] == [
        "2026-11-13", "2026-11-15", "2026-11-16", "2026-11-17", "2026-11-18", "2026-11-19"]
    tournaments = EventSchedule(gaming.events).occurrences(AS_OF - pd.Timedelta("8D"), AS_OF)
    assert not any(o.start < t.end and o.end > t.start for o in week for t in tournaments)
    # Without the YAML's events, the learned tournament is scored, and the daily peak yields to it.
    alone = learned.occurrences(AS_OF - pd.Timedelta("7D"), AS_OF)
    assert [o.name for o in alone if o.start.dayofweek == 5] == ["learned peak Sat " + learned.peaks[0].start]


def test_a_learned_peak_is_addressed_by_name_like_an_event(gaming, learned):
    daily = next(p for p in learned.peaks if p.every == DAILY)
    latest = find_occurrence(gaming, daily.name, AS_OF, learned=learned)
    assert latest.name == daily.name and latest.kind == KIND
    assert str(latest.start.tz_convert(NEW_YORK).date()) == "2026-11-19" and latest.end <= AS_OF
    with pytest.raises(UnknownEventError) as unknown:
        find_occurrence(gaming, "Finals", AS_OF, learned=learned)
    assert str(unknown.value).endswith(
        f"has no event 'Finals'; events: Season 5 Launch, Weekend Tournament, {learned.peaks[0].name}, {daily.name}")
    # Every Saturday the tournament covers the learned Saturday peak: it has no occurrence of its own.
    with pytest.raises(UnfinishedEventError, match="one that coincides with a scheduled event is that event's"):
        find_occurrence(gaming, learned.peaks[0].name, AS_OF, learned=learned)
    # While today's occurrence runs, it is not finished.
    running = pd.Timestamp(f"2026-11-19 {daily.start}", tz=NEW_YORK) + pd.Timedelta("10min")
    with pytest.raises(UnfinishedEventError, match="still running"):
        find_occurrence(gaming, daily.name, running.tz_convert("UTC"), learned=learned)


def test_a_history_without_recurring_peaks_learns_none_and_says_so(gaming):
    # Two weeks of a flat load (3 % noise) with two one-off surges (x3 for three hours, a Tuesday and a
    # Thursday a week apart at different times): nothing recurs on most days or most weeks.
    start, end = history_window(gaming, AS_OF)
    index = pd.date_range(start, end, freq=gaming.step_timedelta, inclusive="left")
    load = 1000 * (1 + 0.03 * np.random.default_rng(19).standard_normal(len(index)))
    load[(index >= "2026-11-10T09:00Z") & (index < "2026-11-10T12:00Z")] *= 3
    load[(index >= "2026-11-19T15:00Z") & (index < "2026-11-19T18:00Z")] *= 3
    found = learn_peaks(gaming, pd.DataFrame({"concurrent_users": load}, index=index))
    assert found.peaks == ()
    assert found.note.startswith("no recurring peak in concurrent_users")
    assert "no time of day reaches 1.2x the typical level on most days" in found.note
    assert "no weekday's time reaches 1.5x that time's usual level on most weeks" in found.note
    assert found.occurrences(AS_OF - pd.Timedelta("7D"), AS_OF) == []


def test_too_short_a_history_learns_no_weekly_peak_and_says_why(gaming):
    start = AS_OF - pd.Timedelta("9D")
    found = learn_peaks(gaming, Simulator(gaming, now=AS_OF).fetch(start, AS_OF))
    assert all(p.every == DAILY for p in found.peaks)
    short = learn_peaks(gaming, Simulator(gaming, now=AS_OF).fetch(AS_OF - pd.Timedelta("3D"), AS_OF))
    assert short.peaks == () and "days of concurrent_users history, 7 needed" in short.note
