"""A served tenant, without BentoML: its bundle's champions, its recent history and its step cache,
and the answers they give (each in its own module under ``serving/answers``). The BentoML service is
a thin HTTP shell over this; tests and notebooks can use it directly.

No request waits at a step boundary: the publisher's refresh (serving/publisher.py), run just after
the boundary once the new step's point is in, computes the step's series and, with ``prepare``, every
answer asked for in the previous step. Until it has finished, ``cached_answer`` gives the previous
step's finished answers (their ``origin`` says which step), so a request is a cache lookup either way;
an answer asked for the first time is computed.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pandas as pd

from helios_pipelines.core.ml.changes import ChangeAnnotation
from helios_pipelines.core.ml.events import EventSchedule
from helios_pipelines.core.ops.capacity_alerts import CapacityReading
from helios_pipelines.core.ops.exposition import Sample
from helios_pipelines.core.sources import MetricsSource, make_source
from helios_pipelines.core.tenants import ScheduledEvent, UnknownMetricError
from serving.answers import annotations, detect, events, predict, recommend, series
from serving.bundle import load_bundle
from serving.errors import NotFoundError
from serving.step_cache import StepCache

# Finished answers kept per step: one per (metric, horizon) or (service, current replicas) asked for.
# Clients choose current_replicas freely, so the cache is bounded rather than trusting them.
MAX_ANSWERS = 4096
# What each step fetches again of the history the previous step fetched: a source may still fill in or
# correct its latest samples (a late scrape, an incident injected into the simulator for the past day).
REFETCHED = pd.Timedelta("1D")
# How many of the previous step's answers ``prepare`` computes for the next one, oldest asked first: a
# step's answers are cheap once its forecasts and scores are, but clients choose current_replicas freely.
MAX_PREPARED = 512


def history_span(step: pd.Timedelta, rows: int) -> pd.Timedelta:
    """The history a served tenant holds for models that read ``rows`` rows before the latest: those rows
    and the latest, plus a day so gaps at the start do not starve them."""
    return step * (rows + 1) + pd.Timedelta("1D")


class TenantRuntime:
    """One tenant's champions plus a short cache of its recent history."""

    def __init__(self, bundle_dir: str | Path, source: MetricsSource | None = None):
        bundle = load_bundle(bundle_dir)
        self.manifest, self.tenant = bundle.manifest, bundle.tenant
        self.forecasters, self.pinned = bundle.forecasters, bundle.pinned
        self.detector, self.detector_pin = bundle.detector, bundle.detector_pin
        self.planner, self.planner_pin = bundle.planner, bundle.planner_pin
        self.step = self.tenant.step_timedelta
        self.source = source or make_source(self.tenant)
        self.posted_events: list[ScheduledEvent] = []
        self.posted_changes: list[ChangeAnnotation] = []  # deploys and scaling actions: known causes of alerts
        self._posted = 0  # events and changes applied so far (answers/annotations.py drops old changes)
        self.last_desired: dict[str, int] = {}  # last published desired replicas per service
        self.cache = StepCache(per_step=MAX_ANSWERS)
        # The newest step whose refresh the publisher finished (None before its first): until the next
        # one finishes, requests of the next step are answered from this one's cache.
        self.published_step: pd.Timestamp | None = None
        self._fetching = threading.Lock()  # one fetch of a step's history, not one per concurrent request
        # What the backtest forecast from, and what the detector's every view looks back over (two
        # weeks for a weekly season): the function served is the one backtested.
        needed = [f.full_history for f in self.forecasters.values()]
        if self.detector is not None:
            needed.append(self.detector.full_history)
        self.history_span = history_span(self.step, max(needed, default=1))

    @property
    def tenant_id(self) -> str:
        return self.tenant.id

    @property
    def events_version(self) -> int:
        """How many events and changes were ever applied here: it says which answers they shaped (a
        count of those held would repeat an earlier one once old changes are dropped)."""
        return self._posted

    def step_end(self, now: pd.Timestamp | None = None) -> pd.Timestamp:
        """The last complete step: every answer is the same from one step boundary to the next."""
        return (now or pd.Timestamp.now(tz="UTC")).floor(self.step)

    def history(self, now: pd.Timestamp | None = None) -> pd.DataFrame:
        """Recent history up to the last complete step, fetched at most once per step."""
        end = self.step_end(now)
        found = self.cache.get(end, ("history",))
        if found is not None:
            return found
        with self._fetching:
            return self.cache.get_or_compute(end, ("history",), lambda: self._fetch_history(end))

    def _fetch_history(self, end: pd.Timestamp) -> pd.DataFrame:
        """``history_span`` up to ``end``: the previous step's history, when it is still cached, with its
        last ``REFETCHED`` fetched again and the new step added; else all of it. Fetching every step's
        whole span again (8 days of gaming-corp's 11 metrics at one minute) was two thirds of the
        publisher's refresh at each boundary, competing with the requests for the GIL."""
        previous = self.cache.get(end - self.step, ("history",))
        if previous is None:
            return self.source.fetch(end - self.history_span, end + self.step)
        recent = self.source.fetch(end - REFETCHED, end + self.step)
        kept = previous[(previous.index >= end - self.history_span) & (previous.index < recent.index[0])]
        return pd.concat([kept, recent])

    def metric(self, name: str) -> str:
        try:
            return self.tenant.resolve_metric(name)
        except UnknownMetricError as exc:
            raise NotFoundError(str(exc)) from None

    def events(self) -> EventSchedule:
        return events.schedule(self)

    def add_event(self, event: ScheduledEvent) -> None:
        self.posted_events.append(event)
        self._posted += 1

    def add_change(self, change: ChangeAnnotation) -> None:
        self.posted_changes = [*self.posted_changes, change]  # a new list: detection reads a consistent one
        self._posted += 1

    def cached_answer(self, kind: str, *request, now: pd.Timestamp | None = None) -> dict | None:
        """This step's finished answer to ``kind`` ("predict", "recommend" or "detect") with these
        arguments, or None when it has not been computed (or the request is an error). While the
        publisher's refresh of a new step has not finished, the previous step's answer stands."""
        end, key = self.step_end(now), (kind, *request, self.events_version)
        answer = self.cache.get(end, key)
        if answer is None and self.published_step is not None and end - self.published_step == self.step:
            answer = self.cache.get(self.published_step, key)
        return None if answer is None else dict(answer)

    def prepare(self, now: pd.Timestamp | None = None) -> int:
        """Computes the step's answers to what was asked in the previous step (at most
        ``MAX_PREPARED``), so those requests find them cached; how many. Errors are the caller's:
        the publisher logs a tenant's failure and the requests compute (and answer it) themselves."""
        end = self.step_end(now)
        asked = [key for key in self.cache.keys(end - self.step) if key[0] in _ANSWERS][:MAX_PREPARED]
        for kind, *request, _events_version in asked:
            _ANSWERS[kind](self, *request, now=end)
        return len(asked)

    # ---- the answers ---------------------------------------------------------------------------
    def post_event(self, event: ScheduledEvent) -> dict:
        return events.post(self, event)

    def post_change(self, change: ChangeAnnotation) -> dict:
        return annotations.post(self, change)

    def forecast(self, metric: str, horizon_minutes: int, now: pd.Timestamp | None = None,
                 level: float = 0.8) -> pd.DataFrame:
        return predict.forecast(self, metric, horizon_minutes, self.step_end(now), level)

    def predict(self, metric_name: str, horizon_minutes: int, now: pd.Timestamp | None = None) -> dict:
        end = self.step_end(now)
        return dict(self.cache.get_or_compute(end, ("predict", metric_name, horizon_minutes, self.events_version),
                                              lambda: predict.predict(self, metric_name, horizon_minutes, end)))

    def detect(self, metric_names: list[str] | None = None, points: list[tuple[pd.Timestamp, float]] | None = None,
               now: pd.Timestamp | None = None, since: pd.Timestamp | None = None) -> dict:
        """Scores of the latest step, of client-given ``points``, or of every step after ``since``
        (scheduled detection catching up on the steps since its last look). The latest step's
        answer is kept for the step, keyed by the metrics asked for, like /predict's."""
        end = self.step_end(now)
        if points is not None or since is not None:
            return detect.detect(self, metric_names, points, end, since)
        key = ("detect", tuple(metric_names or ()), self.events_version)
        return dict(self.cache.get_or_compute(end, key, lambda: detect.detect(self, metric_names, None, end)))

    def recommend(self, service_or_metric: str | None = None, current_replicas: int | None = None,
                  now: pd.Timestamp | None = None) -> dict:
        end = self.step_end(now)
        key = ("recommend", service_or_metric, current_replicas, self.events_version)
        return dict(self.cache.get_or_compute(
            end, key, lambda: recommend.recommend(self, service_or_metric, current_replicas, end)))

    def desired_replicas(self, service: str, end: pd.Timestamp) -> dict:
        return recommend.desired_replicas(self, service, end)

    def capacity_readings(self, end: pd.Timestamp) -> list[CapacityReading]:
        return recommend.capacity_readings(self, end)

    def samples(self, now: pd.Timestamp | None = None) -> list[Sample]:
        """Every Helios series of this tenant, computed at most once per step."""
        end = self.step_end(now)
        return self.cache.get_or_compute(end, ("samples", self.events_version), lambda: series.samples(self, end))


# The answers a request finds in the cache, by the first element of their key: what ``prepare`` computes.
_ANSWERS = {
    "predict": TenantRuntime.predict,
    "recommend": TenantRuntime.recommend,
    "detect": lambda runtime, names, now: runtime.detect(list(names) or None, now=now),
}
