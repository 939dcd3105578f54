"""Learned recurring peaks (#19.1): the windows where a tenant's driver metric rises well above its
typical level on most days, or most weeks, at the same local time, learned from its own history at
training time so that their occurrences are scored like scheduled events.

The driver is the metric of the tenant's first scaling target, the one its scorecards score by default.
It is read in bins of 30 minutes (each bin's median: a glitch or a short gap moves it little), on the
tenant's clock (its ``timezone``: daylight saving moves a peak in UTC, not on the clock):

- a daily peak: a time of day whose level is at least ``DAILY_RATIO`` x the typical level (the median
  over the whole history) on most days (``MOST``, two in three; a week of history at least);
- a weekly peak: a weekday's time whose level is at least ``WEEKLY_RATIO`` x that time of day's usual
  level (its median over every day) on most of the weeks seen (two weeks at least): the tournament on
  top of an ordinary Saturday, not the Saturday evening every evening has, nor a weekend's few percent.

Neighbouring peak bins make a window; windows shorter than ``MIN_PEAK`` are dropped. An occurrence is
named from its window on the tenant's clock, "learned peak Sat 09:00" or "learned peak daily 13:00", and
keyed by that name and its start, as a scheduled event's occurrence is.

Where they are kept: in the capacity planner (``CapacityPlanner.peaks``), not in a file of their own.
The planner is the tenant's trained scaling state, learned from the same history in the same step as the
capacity per replica, tracked, promoted and packed into the Bento with it; a scorecard scores with the
champion planner, so the peaks it scores are the ones that planner knew, and the service answers
``GET /events/<name>/scorecard`` from its Bento without the registry or ``configs/``. The version's
``peaks`` tag carries the same dict so the scorecard sensor reads them without downloading the model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from helios_pipelines.core.ml.events import EventSchedule, Occurrence
from helios_pipelines.core.tenants import TenantConfig

KIND = "learned_peak"
BIN = pd.Timedelta("30min")
# A fifth above the typical level: past the few percent of noise and a weekend's lift, below the
# evening peak of a consumer service (the demo tenants' reach 1.27x to 2.4x).
DAILY_RATIO = 1.2
# Half again what that time of day usually carries: a tournament or a flash sale (x1.6 to x2.6 in the
# simulator), not the weekend's x1.18 or Friday evening's x1.1.
WEEKLY_RATIO = 1.5
MOST = 2 / 3
MIN_PEAK = pd.Timedelta("1h")
MIN_DAYS = 7
MIN_WEEKS = 2
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
DAILY = "day"


@dataclass(frozen=True)
class LearnedPeak:
    every: str  # DAILY, or the weekday it recurs on ("Mon" ... "Sun")
    start: str  # its start on the tenant's clock, "HH:MM"
    minutes: int
    ratio: float  # median level over the window / the typical level (daily) or that time's usual level (weekly)
    seen: float  # the lowest, over the window's bins, share of the days (weeks) on which the bin was a peak

    @property
    def name(self) -> str:
        return f"learned peak {'daily' if self.every == DAILY else self.every} {self.start}"

    def describe(self) -> str:
        reference = "the typical level" if self.every == DAILY else "that time's usual level"
        share = "days" if self.every == DAILY else "weeks"
        return (f"{self.name} for {self.minutes // 60}h{self.minutes % 60:02d} ({self.ratio:.2f}x {reference}, "
                f"on {self.seen:.0%} of {share} or more)")

    def starts(self, start: pd.Timestamp, end: pd.Timestamp, timezone: str) -> pd.DatetimeIndex:
        """UTC starts of the occurrences overlapping [start, end)."""
        first = (start - pd.Timedelta(minutes=self.minutes)).tz_convert(timezone).date()
        days = pd.date_range(first, end.tz_convert(timezone).date(), freq="D")
        if self.every != DAILY:
            days = days[days.dayofweek == WEEKDAYS.index(self.every)]
        hours, minutes = map(int, self.start.split(":"))
        local = (days + pd.Timedelta(hours=hours, minutes=minutes)).tz_localize(
            timezone, ambiguous=np.zeros(len(days), dtype=bool), nonexistent="shift_forward")
        stamps = local.tz_convert("UTC")
        return stamps[(stamps < end) & (stamps + pd.Timedelta(minutes=self.minutes) > start)]


@dataclass(frozen=True)
class PeakSchedule:
    """A tenant's learned peaks, weekly ones first, and a line saying what was found or why nothing was."""

    metric: str | None
    timezone: str
    peaks: tuple[LearnedPeak, ...] = ()
    note: str = ""

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.peaks]

    def occurrences(self, start: pd.Timestamp, end: pd.Timestamp, events: EventSchedule | None = None) -> list[Occurrence]:
        """Occurrences overlapping [start, end) that overlap no occurrence of ``events`` (the scheduled
        event wins: its scorecard covers the window) nor a weekly peak's (a tournament day's evening is
        the tournament's). The monthly report sums scorecards, so no window may be scored twice."""
        start, end = pd.Timestamp(start), pd.Timestamp(end)
        pad = pd.Timedelta("8D")  # longer than any peak: every occurrence that could overlap one in range
        taken = [(o.start, o.end) for o in (events or EventSchedule()).occurrences(start - pad, end + pad)]
        kept = []
        for peak in self.peaks:  # weekly peaks first
            length = pd.Timedelta(minutes=peak.minutes)
            for begin in peak.starts(start - pad, end + pad, self.timezone):
                if any(begin < e and begin + length > s for s, e in taken):
                    continue
                taken.append((begin, begin + length))
                if begin < end and begin + length > start:
                    kept.append(Occurrence(peak.name, KIND, begin, begin + length, peak.ratio,
                                           (self.metric,) if self.metric else ()))
        return sorted(kept, key=lambda o: o.start)

    def to_dict(self) -> dict:
        return {"metric": self.metric, "timezone": self.timezone, "note": self.note,
                "peaks": [asdict(p) for p in self.peaks]}

    @classmethod
    def from_dict(cls, data: dict | None) -> PeakSchedule | None:
        if not data:
            return None
        return cls(data.get("metric"), data.get("timezone", "UTC"), tuple(LearnedPeak(**p) for p in data.get("peaks", [])),
                   data.get("note", ""))


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(first index, length) of each run of True in a circular ``mask`` (a run may wrap past the end)."""
    if mask.all():
        return [(0, len(mask))]
    if not mask.any():
        return []
    shift = int(np.argmin(mask))  # start scanning at a False, so no run is cut by the array's end
    rolled = np.roll(mask, -shift)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], rolled.astype(int), [0]])))
    return [((int(a) + shift) % len(mask), int(b - a)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def _bins(series: pd.Series, timezone: str, step: pd.Timedelta) -> pd.DataFrame:
    """Bin medians on the tenant's clock (a bin with under half its points observed is a gap), with
    their local date, weekday and slot of the day."""
    width = max(BIN, step)
    local = series.tz_convert(timezone)
    grouped = local.resample(width)
    level = grouped.median().where(grouped.count() >= max(1, (width / step) / 2)).dropna()
    clock = level.index
    return pd.DataFrame({"level": level.to_numpy(), "date": clock.tz_localize(None).normalize(),
                         "weekday": clock.dayofweek,
                         "slot": ((clock.hour * 60 + clock.minute) // int(width.total_seconds() // 60)).to_numpy()},
                        index=level.index)


def learn_peaks(tenant: TenantConfig, history: pd.DataFrame | None) -> PeakSchedule:
    """The tenant's recurring peaks in the driver of its first scaling target, from ``history``."""
    target = tenant.scaling[0] if tenant.scaling else None
    metric = target.metric if target else None
    if metric is None:
        return PeakSchedule(None, tenant.timezone, note="no learned peaks: the tenant has no scaling target to learn them for")
    if history is None or metric not in history or history[metric].notna().sum() == 0:
        return PeakSchedule(metric, tenant.timezone, note=f"no learned peaks: no {metric} history")
    step = tenant.step_timedelta
    width = max(BIN, step)
    per_day = int(pd.Timedelta("1D") / width)
    frame = _bins(history[metric].astype(float), tenant.timezone, step)
    days = frame["date"].nunique()
    if days < MIN_DAYS:
        return PeakSchedule(metric, tenant.timezone,
                            note=f"no learned peaks: {days} days of {metric} history, {MIN_DAYS} needed")
    typical = float(frame["level"].median())
    by_slot = frame.groupby("slot")["level"]
    daily_share = (frame["level"] >= DAILY_RATIO * typical).groupby(frame["slot"]).mean().reindex(range(per_day), fill_value=0)
    daily_mask = (daily_share >= MOST) & (by_slot.count().reindex(range(per_day), fill_value=0) >= MIN_DAYS)
    usual = by_slot.median()
    bins_needed = int(np.ceil(MIN_PEAK / width))

    def clock(slot: int) -> str:
        minutes = int(slot * width.total_seconds() // 60)
        return f"{minutes // 60:02d}:{minutes % 60:02d}"

    weekly: list[LearnedPeak] = []
    weeks = (frame.index[-1] - frame.index[0]) / pd.Timedelta("7D")
    residual = frame["level"] / frame["slot"].map(usual)
    week_slot = frame["weekday"] * per_day + frame["slot"]
    weekly_share = (residual >= WEEKLY_RATIO).groupby(week_slot).mean().reindex(range(7 * per_day), fill_value=0)
    weekly_seen = week_slot.value_counts().reindex(range(7 * per_day), fill_value=0)
    if weeks >= MIN_WEEKS - 1 / per_day:  # two weeks of bins, the last one's end included
        weekly_mask = ((weekly_share >= MOST) & (weekly_seen >= MIN_WEEKS)).to_numpy()
        for first, length in _runs(weekly_mask):
            if length < bins_needed:
                continue
            slots = [(first + i) % (7 * per_day) for i in range(length)]
            inside = week_slot.isin(slots)
            weekly.append(LearnedPeak(WEEKDAYS[first // per_day], clock(first % per_day), int(length * width / pd.Timedelta("1min")),
                                      round(float(residual[inside].median()), 3), round(float(weekly_share[slots].min()), 3)))
    daily = []
    for first, length in _runs(daily_mask.to_numpy()):
        if length < bins_needed:
            continue
        slots = [(first + i) % per_day for i in range(length)]
        inside = frame["slot"].isin(slots)
        daily.append(LearnedPeak(DAILY, clock(first), int(length * width / pd.Timedelta("1min")),
                                 round(float(frame.loc[inside, "level"].median() / typical), 3),
                                 round(float(daily_share[slots].min()), 3)))
    peaks = tuple(weekly + daily)
    basis = f"{metric} in {width.total_seconds() / 60:g}-minute bins on {tenant.timezone} time, typical level {typical:,.1f}"
    if peaks:
        return PeakSchedule(metric, tenant.timezone, peaks,
                            f"{len(peaks)} learned peak(s) in {basis}: " + "; ".join(p.describe() for p in peaks))
    closest = int(daily_share.idxmax())
    why = [f"no time of day reaches {DAILY_RATIO:g}x the typical level on most days (the closest, {clock(closest)}, "
           f"on {daily_share[closest]:.0%} of them)"]
    if weeks < MIN_WEEKS - 1 / per_day:
        why.append(f"weekly peaks need {MIN_WEEKS} weeks of history, it has {days} days")
    else:
        why.append(f"no weekday's time reaches {WEEKLY_RATIO:g}x that time's usual level on most weeks")
    return PeakSchedule(metric, tenant.timezone, (), f"no recurring peak in {basis}: " + "; ".join(why))
