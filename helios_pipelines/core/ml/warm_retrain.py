"""Which champion a forecaster's retrain continues, and what the run records about it (#20.2).

A retrain whose fingerprint differs from the champion's by the data window alone (configuration and
code unchanged: ``fingerprints.ChampionMatch.window_only``), for a champion of a kind that continues
boosting (``Forecaster.warm_starts``: Helios' forecaster, XGBoost), warm-starts that kind: its backtest
folds are chained (the first is offered the champion, each next one the previous fold's model) and
its refit on the whole window continues the champion. The model takes a base only where that keeps
its evaluation honest (``models.warm_start``). The other candidates (Prophet, the baseline) have
nothing to continue and refit on the new window; the champion stays the bar promotion measures them
against. ``force`` fits every candidate from scratch.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from helios_pipelines.core.ml.fingerprints import ChampionMatch
from helios_pipelines.core.ml.models.base import Forecaster
from helios_pipelines.core.ml.models.forecasters import FORECASTERS
from helios_pipelines.core.ml.models.warm_start import load_base
from helios_pipelines.core.ml.tracking import Tracker


@dataclass(frozen=True)
class WarmBase:
    model: Forecaster  # the champion's fitted model
    version: str

    @property
    def kind(self) -> str:
        return self.model.kind


def warm_base(tracker: Tracker, match: ChampionMatch, candidates: tuple[str, ...]) -> WarmBase | None:
    """The champion's model when this retrain may continue it (else None)."""
    champion = match.champion
    if not match.window_only or champion.tags.kind not in candidates or not FORECASTERS[champion.tags.kind].warm_starts:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        model = load_base(tracker.download_model_dir(champion.name, champion.version, Path(tmp)))
    return WarmBase(model, champion.version)


def offer(model: Forecaster, base: WarmBase, fitted: list[Forecaster]) -> Forecaster:
    """A backtest fold's model offered its base: the previous fold's model, the champion for the first."""
    return model.continue_from(fitted[-1] if fitted else base.model)


def record(base: WarmBase, folds: list[Forecaster], fold_seconds: list[float], refit: Forecaster | None) -> dict:
    """What the run says about a warm-started kind: per fold and for the refit, what it continued (or why
    it fitted from scratch), the boosting rounds grown against a cold fit's, and the fits' seconds."""

    def said(model: Forecaster, source: str) -> str:
        state = model.warm_start_
        return f"continued {source}" if state["warm"] else f"cold: {source} refused ({state['refused']})"

    fits = [*folds, *([refit] if refit is not None else [])]
    grown = sum(m.boosting_rounds_["grown"] for m in fits)
    cold = sum(m.boosting_rounds_["cold"] for m in fits)
    return {
        "kind": base.kind,
        "champion_version": base.version,
        "folds": [said(m, f"champion v{base.version}" if i == 0 else f"fold {i}") for i, m in enumerate(folds)],
        "refit": said(refit, f"champion v{base.version}") if refit is not None else "not refitted (another kind won)",
        "fold_fit_seconds": [round(s, 2) for s in fold_seconds],
        "boosting_rounds": grown,
        "cold_boosting_rounds": cold,
        "saved": f"{cold - grown} of {cold} boosting rounds ({(cold - grown) / cold:.0%})",
    }
