"""Cross-metric expectations: what a metric should be, given the load that drives it.

A tenant's load metric (the one its scaling follows: players, requests) drives the others: CPU,
queue, latency and utilisation follow it, with the lag of the customer's own autoscaler. Fitted on
the tenant's history, a small gradient-boosted model per metric predicts it from the drivers' current
value and recent trailing means (the lag), so a metric that leaves its usual relation to its drivers
is seen even inside its own range (CPU up while players are flat, latency up at the same load), and
a metric that merely follows a surge of its drivers (a tournament's queue) is not.

Besides the load, the tenant's utilisation (its scaling's ``utilization_metric``) is the pressure on
the fleet: latency and queues follow it, not the load alone (a fast ramp outruns the customer's
autoscaler, utilisation rises, and latency with it). It is an input of every other metric's relation;
its own relation reads the load only.

A scheduled event's ramps (and the lagged inputs' memory of them) are where a relation has the least
history to learn from: a tournament's end outruns the customer's autoscaler in ways two past
tournaments cannot teach. Each relation learns from its fit history how much wider its errors are
there than elsewhere, and its interval widens by that much while an event ramps.

A relation that explains the metric on held-out history (the last quarter of the fit window, after
fitting on the first three quarters) replaces the metric's univariate rarity views; one that explains
less (the metric's own noise dominates its spread) only vetoes them: such a metric is anomalous when
it is rare on its own and its drivers do not explain it. Learned from the tenant's history, never
hand-set.
"""

from __future__ import annotations

import functools
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import HuberRegressor
from threadpoolctl import ThreadpoolController

from helios_pipelines.core.ml.models.series_views import robust_centre_and_spread

#: Trailing windows (rows) of each driver given to the relation: the driver's recent past stands in
#: for whatever lag the customer's autoscaler has.
DRIVER_WINDOWS = (5, 10, 30)
#: Share of the metric's held-out variance the relation must explain to be used.
MIN_EXPLAINED = 0.8
#: Log-load distance outside the fitted range that widens a relation's interval by one sigma (5 %).
WIDEN_PER = 0.05
HOLDOUT_SHARE = 0.25
#: Rows of a scheduled event's ramps a fit history needs before its relations learn how much less
#: certain they are there (two ramps' worth of the longest driver window).
MIN_TRANSITION_ROWS = 2 * max(DRIVER_WINDOWS)


def in_transition(multipliers: np.ndarray | None, rows: int) -> np.ndarray | None:
    """Rows whose drivers' known multiplier (a scheduled event, ramps included) changed within the
    ``rows`` before them: a relation's lagged inputs still carry the ramp. None without events."""
    if multipliers is None:
        return None
    logged = pd.DataFrame(np.log(np.where(multipliers > 0, multipliers, 1.0)))
    window = logged.rolling(rows + 1, min_periods=1)
    return ((window.max() - window.min()).to_numpy() > 1e-9).any(axis=1)


def _trailing_mean(values: np.ndarray, window: int) -> np.ndarray:
    out = np.full(values.shape, np.nan)
    if values.shape[0] >= window:
        out[window - 1 :] = np.lib.stride_tricks.sliding_window_view(values, window, axis=0).mean(axis=-1)
    return out


def _signed_log(values: np.ndarray) -> np.ndarray:
    """Multiplicative effects become additive; defined for any sign."""
    return np.sign(values) * np.log1p(np.abs(values))


def driver_features(drivers: np.ndarray) -> np.ndarray:
    """(rows, features): each driver now (log), its change since ``DRIVER_WINDOWS`` rows ago and its
    trailing means over them. Causal: a row uses only itself and the rows before it."""
    # A scrape gap would leave every lag and trailing mean undefined for a window after it: carry the
    # last observed load forward (causal) so the expectation stays defined.
    drivers = pd.DataFrame(drivers).ffill().to_numpy(dtype=float)
    logged = _signed_log(drivers)
    columns = [logged]
    for rows in DRIVER_WINDOWS:
        lagged = np.full(logged.shape, np.nan)
        lagged[rows:] = logged[:-rows]
        columns += [logged - lagged, _signed_log(_trailing_mean(drivers, rows))]
    return np.hstack(columns)


@functools.cache
def _scipy_blas() -> ThreadpoolController | None:
    """The OpenBLAS scipy's wheel bundles (``scipy.libs``, apart from numpy's), or None where scipy
    shares numpy's BLAS."""
    loaded = ThreadpoolController()
    own = [c.filepath for c in loaded.lib_controllers if c.user_api == "blas" and Path(c.filepath).parent.name == "scipy.libs"]
    return loaded.select(filepath=own) if own else None


def _one_thread_lbfgs():
    """Huber's L-BFGS-B (scipy >= 1.15, ported to C) calls LAPACK on its tiny matrices hundreds of
    times a fit, and a threaded OpenBLAS spends most of that in waking and waiting for its threads
    (scipy/scipy#22438): one thread there took a Huber fit from 10-14 s to 3-5 s on two loaded cores,
    with bit-identical coefficients. numpy's BLAS (the loss and gradient) keeps its threads: its
    reductions would sum in another order and the fit would differ (bench/results/train.md)."""
    blas = _scipy_blas()
    return blas.limit(limits=1) if blas is not None else nullcontext()


class _LinearThenTrees:
    """A robust linear fit in log space (it extrapolates: a load beyond any seen, such as a launch,
    still gets a sensible expectation), then shallow boosted trees on what it leaves (the bends:
    queueing and latency under pressure). Both robust losses: incidents in the fit history pull little."""

    def __init__(self, seed: int):
        self.linear = HuberRegressor(max_iter=1000)
        # Leaves of at least 200 rows: a 10-40 minute incident in the fit history cannot get a leaf of its own.
        self.trees = HistGradientBoostingRegressor(loss="absolute_error", max_iter=80, max_leaf_nodes=15,
                                                   min_samples_leaf=200, early_stopping=False, random_state=seed)

    def fit(self, features: np.ndarray, y: np.ndarray) -> _LinearThenTrees:
        complete = np.isfinite(features).all(axis=1)
        self.centre_ = np.nanmedian(features, axis=0)
        spread = np.nanstd(features, axis=0)
        self.scale_ = np.where(spread > 0, spread, 1.0)  # standardised: the solver converges
        with _one_thread_lbfgs():
            self.linear.fit(self._filled(features[complete]), y[complete])
        self.trees.fit(features, y - self.linear.predict(self._filled(features)))
        return self

    def _filled(self, features: np.ndarray) -> np.ndarray:
        return np.where(np.isfinite(features), (features - self.centre_) / self.scale_, 0.0)

    def predict(self, features: np.ndarray) -> np.ndarray:
        return self.linear.predict(self._filled(features)) + self.trees.predict(features)


class Relations:
    """Per target metric, a model of it from the driver metrics; residuals in the target's log space.

    ``drivers``: the load; ``pressure``: the utilisation, an input of every target but itself."""

    def __init__(self, drivers: list[str], seed: int = 42, min_explained: float = MIN_EXPLAINED,
                 pressure: list[str] = ()):
        self.drivers = list(drivers)
        self.pressure = [p for p in pressure if p not in self.drivers]
        self.seed = seed
        self.min_explained = float(min_explained)
        self.models_: dict[str, _LinearThenTrees] = {}
        self.explained_: dict[str, float] = {}
        self.spread_: dict[str, float] = {}  # robust sigma of the held-out residuals
        self.replaces_: dict[str, bool] = {}  # explains enough to replace the univariate views (else vetoes them)

    def _model(self) -> _LinearThenTrees:
        return _LinearThenTrees(self.seed)

    def inputs(self, target: str) -> list[str]:
        return self.drivers + [p for p in self.pressure if p != target]

    def _features(self, frame: pd.DataFrame, targets: list[str]) -> dict[str, tuple[list[str], np.ndarray]]:
        """Each target's inputs and their ``driver_features``, computed once per distinct set of inputs."""
        by_inputs: dict[tuple[str, ...], np.ndarray] = {}
        out = {}
        for target in targets:
            inputs = tuple(self.inputs(target))
            if inputs not in by_inputs:
                by_inputs[inputs] = driver_features(frame[list(inputs)].to_numpy(dtype=float))
            out[target] = (list(inputs), by_inputs[inputs])
        return out

    def fit(self, frame: pd.DataFrame, targets: list[str], multipliers: np.ndarray | None = None) -> Relations:
        """``multipliers``: the known (scheduled) multiplier of each driver per row, or None."""
        self.load_range_ = {}
        self.widen_: dict[str, float] = {}
        transition = in_transition(multipliers, max(DRIVER_WINDOWS))
        cut = int(len(frame) * (1 - HOLDOUT_SHARE))
        for target, (inputs, features) in self._features(frame, targets).items():
            y = _signed_log(frame[target].to_numpy(dtype=float))
            known = np.isfinite(y)
            train, held = known.copy(), known.copy()
            train[cut:], held[:cut] = False, False
            if train.sum() < 1000 or held.sum() < 200:
                continue
            probe = self._model().fit(features[train], y[train])
            residual = y[held] - probe.predict(features[held])
            # Robust explained share: incidents in the held-out quarter should not veto a good relation.
            spread = np.subtract(*np.percentile(y[held], [75, 25]))
            explained = 1 - (np.subtract(*np.percentile(residual, [75, 25])) / spread) ** 2 if spread > 0 else 0.0
            self.explained_[target] = float(explained)
            if explained <= 0:
                continue  # no better than the metric's median: neither replaces nor vetoes anything
            self.models_[target] = self._model().fit(features[known], y[known])
            self.widen_[target] = self._transition_widening(features, y, known, target, transition)
            self.replaces_[target] = explained >= self.min_explained
            self.spread_[target] = max(robust_centre_and_spread(residual)[1], 1e-9)
            loads = _signed_log(frame[inputs].to_numpy(dtype=float))
            self.load_range_[target] = np.nanquantile(loads, [0.005, 0.995], axis=0)
        return self

    def _transition_widening(self, features: np.ndarray, y: np.ndarray, known: np.ndarray, target: str,
                             transition: np.ndarray | None) -> float:
        """How much wider the relation's errors are while a scheduled event ramps (and its lagged
        inputs still carry the ramp) than elsewhere in the fit history: the median absolute residual
        there over the median elsewhere, at least 1 (in-sample residuals: only their ratio is used).
        Known causes are inputs: the tenant's own history says how far a ramp is to be trusted."""
        if transition is None or (transition & known).sum() < MIN_TRANSITION_ROWS:
            return 1.0
        residual = np.abs(y - self.models_[target].predict(features))
        inside, outside = residual[transition & known], residual[~transition & known]
        return max(1.0, float(np.median(inside) / max(np.median(outside), 1e-12)))

    @property
    def targets(self) -> list[str]:
        return list(self.models_)

    def standardised_residuals(self, frame: pd.DataFrame, multipliers: np.ndarray | None = None,
                               targets: pd.DataFrame | None = None) -> np.ndarray:
        """(rows, targets) observed minus expected in the targets' log space, in units of each
        relation's interval: its held-out robust sigma, widened where an input is beyond the range the
        relation was learned on (one sigma more per ``WIDEN_PER`` of log input outside it), as a
        forecast's interval widens far from its data, and by the relation's learned widening while a
        scheduled event ramps (``multipliers`` as in ``fit``). NaN where the target or an input is
        unknown. ``targets``: the targets' values where they differ from ``frame``'s (a reported scaling
        divided out of a per-replica target, while the inputs stay what the fleet really carried)."""
        out = np.full((len(frame), len(self.models_)), np.nan)
        transition = in_transition(multipliers, max(DRIVER_WINDOWS))
        features = self._features(frame, self.targets)
        for k, (target, model) in enumerate(self.models_.items()):
            inputs, target_features = features[target]
            raw = frame[inputs].to_numpy(dtype=float)
            low, high = self.load_range_[target]
            loads = _signed_log(raw)
            outside = np.nan_to_num(np.fmax(np.fmax(loads - high, low - loads), 0.0).max(axis=1))
            observed = (frame if targets is None else targets)[target].to_numpy(dtype=float)
            residual = _signed_log(observed) - model.predict(target_features)
            residual[~np.isfinite(raw).all(axis=1)] = np.nan  # no load, no expectation
            out[:, k] = residual / self.spread_[target] / (1 + outside / WIDEN_PER)
            if transition is not None:
                out[transition, k] /= getattr(self, "widen_", {}).get(target, 1.0)
        return out
