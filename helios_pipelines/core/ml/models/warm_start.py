"""Continued boosting from an earlier fit (#20.2): the rule for when a forecaster may grow an earlier
model's boosters on a new window instead of growing them from scratch, and the growing itself.

A retrain whose data window moved while its configuration and code did not (the fingerprint,
``core.ml.fingerprints``) offers the champion to the new fit (``Forecaster.continue_from``). The fit
then adds ``WARM_SHARE`` of its usual boosting rounds to each of the base's boosters, fitted on the
new window (``xgb.train(..., xgb_model=...)``), instead of all of them from nothing.

Honesty. A model that continues a base has, through the base, seen everything the base saw. So the
base is taken only when it saw nothing that the new fit's own evaluation holds out:

- its last training point is no later than the new window's (``data_end_``): the window's future
  is a backtest fold's test data, and a champion trained on the latest window saw the test data of
  every fold but the last; this is what keeps the backtest honest;
- its calibration models (Helios' split-conformal intervals and blend weights) saw nothing of the new
  window's calibration slice (``calibration_start_``): else the intervals would be measured on
  data the models were trained on and come out too narrow. The base keeps its calibration boosters for
  this, and the new calibration boosters continue those, not the base's final ones.

A refused base means a cold fit, and the model says why (``warm_start_``). The training offers each
backtest fold the previous fold's model (the champion to the first one, which refuses it unless the
window moved by most of its length): the folds are the cold fit's folds, and each one scores what the
served model is, a model continued from one fitted a little earlier on data before the fold's origin.

Continued boosters grow, so a base that already holds ``MAX_TREES`` times a cold fit's trees is
refused and the model refitted from scratch, which resets the chain.

What only a warm start reads (the calibration boosters) is saved beside the served model, in
``WARM_STATE_FILE``, not in it: serving loads ``model.joblib`` alone and keeps no booster it never
predicts with (they would double a forecaster's memory); ``load_base`` reads both.
"""

from __future__ import annotations

from pathlib import Path

import joblib
import pandas as pd
import xgboost as xgb

from helios_pipelines.core.ml.models.base import SavableModel

WARM_STATE_FILE = "warm_start.joblib"

WARM_SHARE = 0.25  # rounds a continued booster adds, as a share of a cold fit's rounds
MAX_TREES = 2  # a base holding more than this many times a cold fit's trees is refitted from scratch


def boost(params: dict, train: xgb.DMatrix, rounds: int, base: xgb.Booster | None) -> xgb.Booster:
    """``rounds`` trees from scratch, or ``WARM_SHARE`` of them on top of ``base``."""
    if base is None:
        return xgb.train(params, train, rounds)
    # The base as its saved model bytes: handing xgboost the Booster object copies its training state
    # too (its random generator included), and the continued trees then differ from run to run.
    return xgb.train(params, train, continued_rounds(rounds), xgb_model=bytearray(base.save_raw()))


def continued_rounds(rounds: int) -> int:
    return max(1, round(rounds * WARM_SHARE))


def refusal(model, base, window_end: pd.Timestamp, calibration_start: pd.Timestamp) -> str | None:
    """Why ``model`` may not continue ``base`` on a window ending at ``window_end`` whose calibration
    slice starts at ``calibration_start`` (None when it may)."""
    if type(base) is not type(model) or (base.step, base.max_horizon, base.drivers) != (
            model.step, model.max_horizon, model.drivers):
        return "the base is a different model (kind, step, horizon or drivers)"
    if getattr(base, "calibration_booster_", None) is None:
        return "the base keeps no calibration boosters (fitted before warm starts, or loaded without them)"
    if base.data_end_ > window_end:
        return f"the base saw data up to {base.data_end_}, after this window's end {window_end} (the test data)"
    if base.calibration_start_ > calibration_start:
        return (f"the base's calibration models saw data up to {base.calibration_start_}, inside this "
                f"window's calibration slice (from {calibration_start})")
    trees = base.booster_.num_boosted_rounds()
    if trees + continued_rounds(model.n_estimators) > MAX_TREES * model.n_estimators:
        return f"the base already holds {trees} trees (at most {MAX_TREES}x {model.n_estimators}): refitted from scratch"
    return None


def rounds_built(pairs: list[tuple[xgb.Booster | None, xgb.Booster | None]]) -> int:
    """Boosting rounds a fit grew, over its (new booster, the base it continued or None) pairs."""
    return sum(new.num_boosted_rounds() - (base.num_boosted_rounds() if base is not None else 0)
               for new, base in pairs if new is not None)


def save_split(model: SavableModel, path: Path, warm_state: tuple[str, ...]) -> Path:
    """Save ``model`` without its ``warm_state`` attributes, and those beside it in WARM_STATE_FILE."""
    served = type(model).__new__(type(model))
    served.__dict__.update({k: v for k, v in model.__dict__.items() if k not in warm_state})
    path = SavableModel.save(served, path)
    joblib.dump({k: model.__dict__[k] for k in warm_state if k in model.__dict__}, path / WARM_STATE_FILE)
    return path


def load_base(path: Path) -> SavableModel:
    """A saved model with what its warm start reads (when it was saved with any)."""
    model = SavableModel.load(path)
    if (path / WARM_STATE_FILE).exists():
        model.__dict__.update(joblib.load(path / WARM_STATE_FILE))
    return model
