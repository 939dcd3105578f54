"""Registry review: what a reviewer reads about a version, manual promotion and one-step rollback.

The pipeline promotes automatically (``core.ml.training``) unless a tenant asks for manual review; either
way a person may move ``champion`` by hand. Every manual move is recorded twice so the MLflow UI tells
the whole story:

- on the version, the tag ``review`` (who, why, when, which action; ``VersionTags.review``);
- on the registered model, the tag ``champion_history``: the champions in the order they served, as a
  stack. ``rollback`` pops the current champion and serves the one below it again.

Automatic promotions do not write the history; they leave ``promotion`` = ``{"promoted": true}`` on the
version, and the history is completed from those tags when read, so a rollback also undoes a promotion
the pipeline made.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from helios_pipelines.core.ml.tracking import CHALLENGER, CHAMPION, RegisteredVersion, Tracker, VersionTags

# A tag of the registered model (the version tags are VersionTags).
HISTORY_TAG = "champion_history"


class ReviewError(ValueError):
    """A review action that cannot be done as asked; the message says why."""


@dataclass(frozen=True)
class VersionSummary:
    """The numbers and provenance a reviewer compares, from a version's :class:`VersionTags`."""

    version: str
    kind: str
    mase: float | None
    smape: float | None
    coverage: float | None
    baseline_mase: float | None
    data_start: str | None
    data_end: str | None
    source: str | None
    promotion: str | None
    evaluation: dict | None

    @classmethod
    def of(cls, version: RegisteredVersion) -> VersionSummary:
        tags = version.tags
        backtest = tags.backtest or {}
        baseline = tags.baseline_backtest or {}
        # The interval coverage is keyed by its level (coverage_80); a reviewer wants the nominal one.
        coverage = next((v for k, v in sorted(backtest.items()) if k.startswith("coverage")), None)
        review = tags.review
        decision = (tags.promotion or {}).get("reason")
        if review:
            decision = f"{review['action']} by {review['by']}: {review['reason']}"
        return cls(
            version=version.version,
            kind=tags.kind or "?",
            mase=_number(backtest.get("mase")),
            smape=_number(backtest.get("smape")),
            coverage=_number(coverage),
            baseline_mase=_number(baseline.get("mase")),
            data_start=tags.data_start,
            data_end=tags.data_end,
            source=tags.source,
            promotion=decision,
            evaluation=tags.evaluation,
        )


def _json(text: str | None):
    try:
        return json.loads(text) if text else None
    except json.JSONDecodeError:
        return None


def _number(value) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def resolve_model_name(tracker: Tracker, tenant_id: str, name: str) -> str:
    """A registered model of the tenant from its full name or its short form: a metric
    (``concurrent_users`` -> ``<tenant>_concurrent_users_forecaster``) or a capability
    (``anomaly_detector``)."""
    known = tracker.registered_models(tenant_id)
    for candidate in (name, f"{tenant_id}_{name}", f"{tenant_id}_{name}_forecaster"):
        if candidate in known:
            return candidate
    raise ReviewError(f"tenant '{tenant_id}' has no registered model '{name}'; known: {', '.join(known) or '(none)'}")


def champion_history(tracker: Tracker, name: str) -> list[str]:
    """Versions that served as champion, oldest first; the last one is the current champion."""
    recorded = [str(v) for v in (_json(tracker.model_tag(name, HISTORY_TAG)) or [])]
    newest_recorded = max((int(v) for v in recorded), default=0)
    history = recorded + [
        v.version
        for v in tracker.versions(name)
        if int(v.version) > newest_recorded and (v.tags.promotion or {}).get("promoted") and not v.tags.rolled_back
    ]
    champion = tracker.version_by_alias(name, CHAMPION)
    if champion is not None and (not history or history[-1] != champion.version):
        history.append(champion.version)
    return history


def _mark(tracker: Tracker, name: str, version: str, action: str, by: str, reason: str) -> None:
    note = {"action": action, "by": by, "reason": reason, "at": datetime.now(UTC).isoformat(timespec="seconds")}
    tracker.tag_version(name, version, VersionTags(review=note))


def promote(tracker: Tracker, name: str, by: str, reason: str, version: str | None = None) -> tuple[str | None, str]:
    """Make ``version`` (the challenger by default) the champion; returns (champion before, after)."""
    if version is None:
        challenger = tracker.version_by_alias(name, CHALLENGER)
        if challenger is None:
            raise ReviewError(f"{name} has no challenger; name a version with --version")
        version = challenger.version
    tracker.get_version(name, version)  # an unknown version fails here, before anything moves
    history = champion_history(tracker, name)
    before = history[-1] if history else None
    if before == version:
        raise ReviewError(f"version {version} of {name} is already the champion")
    tracker.set_alias(name, CHAMPION, version)
    tracker.client.set_registered_model_tag(name, HISTORY_TAG, json.dumps([*history, version]))
    if tracker.get_version(name, version).tags.rolled_back:
        # Promoted again by hand: it is a champion of the history once more.
        tracker.tag_version(name, version, VersionTags(rolled_back=False))
    _mark(tracker, name, version, "promoted", by, reason)
    return before, version


def rollback(tracker: Tracker, name: str, by: str, reason: str) -> tuple[str, str]:
    """Serve the previous champion again; returns (rolled back, champion now). The rolled-back
    version is tagged so a later rollback goes further back instead of returning to it."""
    history = champion_history(tracker, name)
    if len(history) < 2:
        raise ReviewError(f"{name} has no previous champion to roll back to (history: {history or 'empty'})")
    current, previous = history[-1], history[-2]
    tracker.set_alias(name, CHAMPION, previous)
    tracker.client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history[:-1]))
    tracker.tag_version(name, current, VersionTags(rolled_back=True))
    _mark(tracker, name, current, "rolled back", by, reason)
    return current, previous
