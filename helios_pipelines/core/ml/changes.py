"""Changes the tenant reports (a deploy, a scaling action) as known causes of the detector's alerts.

A change is posted with ``POST /annotations`` in Grafana's annotation shape (``time`` and ``timeEnd``
in epoch milliseconds or ISO 8601, ``tags``, ``text``), so a CD step that already annotates Grafana
can annotate Helios with the same body. It is not a scheduled event: an event multiplies traffic by a
learned factor, which would reshape forecasts and the planner; a change only tells the detector why a
metric may move for a while. Its semantics, per metric it applies to (all by default):

- an episode whose onset falls inside the change's window and that returns before the window ends is
  the change's own blip (pods restarting, caches warming): no alert;
- an episode still away when the window ends opens once a return inside the window would have
  closed it (the tenant's recovery window after the window's last row, less one row), naming the
  change: a deploy's regression is the incident operators most need, so it is never silenced, only
  delayed;
- a scaling action from ``replicas_before`` to ``replicas_after`` moves the per-replica metrics it
  names by the known factor before/after: from its time on they are divided by it (``rescaled``)
  where they are judged on their own level (their own views, and as a relation's target), so a
  scale-up's halved utilisation is not a level shift. As an input of another metric's relation they
  stay what the fleet really carried: the queue and latency that pressure drove fall with it, and
  judged against the old pressure they paged (on the simulator, a doubled fleet at night opened a
  dozen queue episodes that way). Only a scaling after the detector's training history ended is
  divided out: one inside it is in what the detector learned.

Apart from a scaling's factor, scores are untouched (the views' memory, and so a later incident's
score, do not depend on what was reported); the window rule runs on the alert state
``alerting.hold_until_return`` drew, whose held episode already remembers the pre-change level.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_validator, model_validator

from helios_pipelines.core.tenants.base import Strict
from helios_pipelines.core.tenants.scheduled_events import utc_within_years

#: A change window longer than this is not a change but a period, which a scheduled event describes.
MAX_CHANGE_HOURS = 6
#: Tags that make a Grafana annotation a scaling action (any other is a deploy).
SCALE_TAGS = frozenset({"scale", "scaling", "autoscale"})
#: Grafana's annotation keys that say where to draw it, not what happened: accepted and not kept.
GRAFANA_PLACEMENT = ("dashboardUID", "dashboardId", "panelId")


class ChangeAnnotation(Strict):
    """A deploy or scaling action the tenant reports. Grafana's ``timeEnd`` is accepted for
    ``time_end``; a change without an end lasts the detector's level window (``explained``)."""

    time: datetime
    time_end: datetime | None = None
    kind: Literal["deploy", "scale"]
    text: str = Field("", max_length=1000)
    tags: list[Annotated[str, Field(max_length=100)]] = Field(default_factory=list, max_length=20)
    metrics: list[str] = Field(default_factory=list, max_length=100,
                               description="logical metrics it moves, empty = all; a scale with replicas names "
                                           "the per-replica metrics they divide")
    replicas_before: int | None = Field(None, ge=1, le=100_000)
    replicas_after: int | None = Field(None, ge=1, le=100_000)

    @model_validator(mode="before")
    @classmethod
    def _grafana_shape(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = {k: v for k, v in data.items() if k not in GRAFANA_PLACEMENT}
        if "timeEnd" in data:
            if data.get("time_end") is not None:
                raise ValueError("time_end: set time_end or Grafana's timeEnd, not both")
            data = {k: v for k, v in data.items() if k != "timeEnd"} | {"time_end": data["timeEnd"]}
        if not data.get("kind"):
            tags = {str(tag).lower() for tag in data.get("tags") or ()}
            data = data | {"kind": "scale" if tags & SCALE_TAGS else "deploy"}
        return data

    @field_validator("time")
    @classmethod
    def _time_utc(cls, value: datetime) -> datetime:
        return utc_within_years(value, "time")

    @field_validator("time_end")
    @classmethod
    def _end_utc(cls, value: datetime | None) -> datetime | None:
        return None if value is None else utc_within_years(value, "time_end")

    @model_validator(mode="after")
    def _coherent(self) -> ChangeAnnotation:
        if self.time_end is not None:
            if self.time_end <= self.time:
                raise ValueError(f"time_end (Grafana's timeEnd) {self.time_end.isoformat()} must be after time "
                                 f"{self.time.isoformat()}")
            if self.time_end - self.time > timedelta(hours=MAX_CHANGE_HOURS):
                raise ValueError(f"time_end (Grafana's timeEnd): a change lasts at most {MAX_CHANGE_HOURS} hours; "
                                 "a longer period is a scheduled event (POST /events)")
        if (self.replicas_before is None) != (self.replicas_after is None):
            raise ValueError("replicas_before and replicas_after: give both or neither")
        if self.replicas_before is not None:
            if self.kind != "scale":
                raise ValueError("replicas_before and replicas_after describe a scaling action: kind must be 'scale'")
            if not self.metrics:
                raise ValueError("metrics: name the per-replica metrics replicas_before/replicas_after scale")
        return self

    @property
    def factor(self) -> float | None:
        """What a scaling action multiplies a per-replica metric by (before/after), if it says."""
        return None if self.replicas_before is None else self.replicas_before / self.replicas_after

    def applies_to(self, metric: str) -> bool:
        return not self.metrics or metric in self.metrics

    @property
    def label(self) -> str:
        text = f" '{self.text[:80]}'" if self.text else ""
        return f"{self.kind}{text} at {self.time.isoformat()}"


def divided_out(change: ChangeAnnotation, learned_until: pd.Timestamp | None) -> bool:
    """Whether ``change`` is a scaling the detector divides out: one after its training history ended
    (``learned_until``; None, a detector that did not keep it: none, as such a scaling may be in what it
    learned)."""
    return change.factor is not None and learned_until is not None and change.time > learned_until


def rescaled(frame: pd.DataFrame, changes: tuple[ChangeAnnotation, ...] | list[ChangeAnnotation],
             learned_until: pd.Timestamp | None) -> pd.DataFrame:
    """``frame`` with each per-replica metric a scaling ``divided_out`` named divided by the scaling's
    factor from its time on: in the scale the detector learned."""
    scalings = [c for c in changes if divided_out(c, learned_until)]
    if not scalings or not isinstance(frame.index, pd.DatetimeIndex):
        return frame
    frame = frame.copy()
    for scaling in scalings:
        columns = [m for m in scaling.metrics if m in frame.columns]
        frame.loc[frame.index >= scaling.time, columns] /= scaling.factor
    return frame


def explained(state: np.ndarray, index: pd.DatetimeIndex, metric: str,
              changes: tuple[ChangeAnnotation, ...] | list[ChangeAnnotation], *, window_rows: int,
              recovery_window: int) -> tuple[np.ndarray, list[str | None]]:
    """One metric's alert ``state`` with the episodes ``changes`` explain removed (the module docstring's
    window rule), and per row the label of the change whose window's end opened the episode alerting
    there. An episode whose value came back at row r closes at row r + ``recovery_window`` - 1
    (``alerting``): one that came back by a window's last row has closed by that window's last row +
    ``recovery_window`` - 1, which is when the rule decides. An onset inside several windows is decided
    at the latest of them, naming that change. Causal: a row's state depends on the rows up to it (an
    episode inside a window is silent until it is decided, whether or not it returns later)."""
    held, n = state, len(state)
    state = held.copy()
    causes: list[str | None] = [None] * n
    if not n:
        return state, causes
    windows = []  # (first row, first row after the window, row the rule decides at, change)
    for change in changes:
        if not change.applies_to(metric) or (change.time_end is None and pd.Timestamp(change.time) < index[0]):
            continue  # without an end, a change before the first row has its window rows outside the frame
        first = int(index.searchsorted(pd.Timestamp(change.time)))
        last = (int(index.searchsorted(pd.Timestamp(change.time_end))) if change.time_end is not None
                else first + window_rows)
        windows.append((first, last, last + recovery_window - 2, change))
    if not windows:
        return state, causes
    for onset in np.flatnonzero(held & ~np.concatenate([[False], held[:-1]])):
        covering = [(decided, change) for first, last, decided, change in windows if first <= onset < last]
        if not covering:
            continue
        decided, change = max(covering, key=lambda window: window[0])
        end = onset + int(np.argmin(held[onset:])) if not held[onset:].all() else n
        state[onset:min(end, decided)] = False
        if end > decided:  # not back inside the window: it opens now, naming the change
            causes[decided:end] = [change.label] * (end - decided)
    return state, causes
