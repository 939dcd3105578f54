"""Would the champion forecaster be a better forecast for the detector's forecast-residual veto? (#17.1)

Issue 17 item 1 asks for the expected value and band "from the champion forecaster where it is good".
Today the detector's veto (``core/ml/models/residual.py``) uses a one-step seasonal forecast: the value a
season ago times the growth since. This script swaps it, for every metric the pipeline has a champion for
(``tenant.forecast_metrics``, not replaced by its relation to the drivers), for Helios' own forecaster
(``HeliosForecaster``, built by ``training.forecaster_for`` as the pipeline builds its candidates and fitted
on the same fit history the detector sees), at a fixed lead L: each scored row t is judged against the
forecast made at origin t - L with its 80 % interval. The concern it measures: a forecast from a recent
origin expects continuation, so it may expect an incident's own rows after its onset (and a gradual
incident), where a season-ago forecast expects only what recurs.

For each tenant it runs ``bench/simulator_detection.py``'s 28-day pass and x3 drill unchanged, with the
fitted detector's ``residual_`` replaced per variant:

- ``seasonal``: the detector as trained (the baseline: bench/results/simulator_detection.md);
- ``champion L=..``: the champion's residual at lead 1, 12 and the model's ``max_horizon``;
- ``... w=1``: the same with the compared metrics' weight forced to 1 (the veto unmasked by the low
  weights two or three weeks of history earn).

Beside the bench's figures it counts the pages the veto took away (rows at or above the threshold before
it, below after) inside incidents and outside, and runs a gradual drill the simulator bench does not have
(the drill's schedule with the load moving to x1/3 or x3 over an hour): where continuation would bite.

The champion's residual is computed vectorised with the model's own parts (``_members``, ``combine``,
``_interval_residuals`` / ``step_intervals``, ``_spread``, the event profiles; the simple member where the
model fell back to it): for one origin it equals ``predict`` (checked to 1e-10 on shopfast's requests). Its
weight is computed as ``residual.py`` computes the seasonal one (cross-fitted miscoverage in contiguous
parts, times the residuals judged as a share of the metric's season, a week where the detector found
none), on residuals no fitted part trained on: the calibration boosters (fitted without the last
``calibration_share`` of the fit history) backcast that slice. The blend's weights and the served interval's
quantiles were fitted on the same slice (a small optimism; the cross-fitting refits the interval per part).

One file past 400 lines: one measurement (the backcast, its weight, the variants and the tables) read
and re-run as a whole. It lives outside the core package because it is a measurement, not a design: it monkeypatches the bench's
``tenant_detector`` and each fitted detector's ``score`` (the champion needs the raw frame and its
timestamps, which the detector's veto does not pass on).

    python bench/champion_residual.py --out /tmp/champion_residual.md   # the tables of bench/results/champion_residual.md
    python bench/champion_residual.py --tenant shopfast --variants seasonal "champion L=1"   # iterating
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from helios_pipelines.core.ml import training
from helios_pipelines.core.ml.models.base import fit_forecaster, on_grid, step_intervals
from helios_pipelines.core.ml.models.helios_blend import combine
from helios_pipelines.core.ml.models.residual import (
    LEVEL,
    MIN_JUDGED,
    SeasonalResidual,
    cross_fitted_miscoverage,
)
from helios_pipelines.core.ml.models.series_views import known_causes_removed
from helios_pipelines.core.sources.simulator import InjectedAnomaly, Simulator

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as `python bench/champion_residual.py` or with -m
import simulator_detection as bench  # noqa: E402

#: The lead an hour ahead at shopfast's 5-minute steps (12 minutes at gaming-corp's 1-minute steps).
HOUR_AT_FIVE_MINUTES = 12


# ---- the champion's backcast: row t against the forecast from origin t - lead -----------------------------
@dataclass
class Backcast:
    """Per row of a series: the forecast from ``lead`` rows earlier and its ``LEVEL`` interval (NaN where
    the origin has less than the model's ``min_history`` before it)."""

    yhat: np.ndarray
    lower: np.ndarray
    upper: np.ndarray


def backcast(model, series: pd.Series, lead: int, booster=None, recursive=None) -> Backcast:
    """``model``'s forecast of every row of ``series`` from ``lead`` rows before it, as ``_predict`` makes
    it from one origin (blend or simple fallback, conformal interval of the origin's volatility bin, event
    profiles with their spread on the bounds). ``booster``/``recursive``: the boosters to use (default: the
    served ones; the calibration ones judge the model on its calibration slice)."""
    booster = model.booster_ if booster is None else booster
    recursive = model.recursive_ if recursive is None else recursive
    series = on_grid(series, model.step)
    index, n = series.index, len(series)
    profile = model._event_profile(index, model.events)
    values = series.to_numpy() / profile
    origins = np.arange(max(model.min_history - 1, 0), n - lead)
    out = Backcast(*(np.full(n, np.nan) for _ in range(3)))
    if origins.size == 0:
        return out
    leads = np.array([lead])
    if model.fallback_ is None:
        members, volatility = model._members(booster, None, values, index, origins, leads, None,
                                             getattr(model, "prophet_", None))
        # _members runs the recursive model for as many steps as it is given leads: given [lead] alone it
        # would put the one-step forecast there. Run it ``lead`` steps and keep the last.
        if recursive is not None and lead <= model.recursive_steps:
            upto = pd.Series(values[: origins.max() + 1], index=index[: origins.max() + 1])
            members[:, 0, 1] = recursive._point_forecasts(upto, origins + 1, lead)[:, -1]
        forecast = combine(model.weights_[lead - 1: lead], members)[:, 0]
        volatility = volatility[:, 0]
    else:
        forecast = model._simple_members(values, origins, leads)[:, 0, model.SIMPLE_MEMBERS.index(model.fallback_)]
        volatility = model._volatility(values, origins)
    origin_volatility = np.nan_to_num(volatility, nan=model.volatility_floor_)
    bins = model._volatility_bin(origin_volatility)
    lo, hi = np.empty(origins.size), np.empty(origins.size)
    for b in np.unique(bins):
        at = bins == b
        low, high = step_intervals(model._interval_residuals(origin_volatility[at][0])[:, lead - 1: lead], LEVEL)
        lo[at], hi[at] = low[0], high[0]
    spread = model._spread(volatility)
    targets = origins + lead
    bounds = [model._event_profile(index, model.events, q)[targets] for q in ((1 - LEVEL) / 2, (1 + LEVEL) / 2)]
    yhat = forecast * profile[targets]
    out.yhat[targets] = yhat
    out.lower[targets] = np.minimum(np.minimum(*[(forecast + lo * spread) * p for p in bounds]), yhat)
    out.upper[targets] = np.maximum(np.maximum(*[(forecast + hi * spread) * p for p in bounds]), yhat)
    return out


def held_out_weight(model, history: pd.Series, lead: int, season: int) -> dict:
    """The champion's weight as ``residual.py`` weighs the seasonal forecast (cross-fitted miscoverage in
    ``FOLDS`` contiguous parts, times the residuals judged as a share of ``season``), on residuals no
    fitted part trained on: the calibration boosters' backcast of the calibration slice, in half-widths of
    the interval served (the conformal one, which carries the origin's volatility and the event profile)."""
    history = on_grid(history, model.step)
    start = history.index.get_loc(model.calibration_start_)
    recursive = getattr(model, "calibration_recursive_", None)
    judged = backcast(model, history, lead, model.calibration_booster_, recursive)
    residual = history.to_numpy() - judged.yhat
    unit = np.where(residual >= 0, judged.upper - judged.yhat, judged.yhat - judged.lower)
    residual, unit = residual[start + lead:], unit[start + lead:]
    with np.errstate(invalid="ignore", divide="ignore"):
        z = residual / np.where(unit > 0, unit, np.nan)
    z = z[np.isfinite(z)]
    if z.size < MIN_JUDGED:
        return {"weight": 0.0, "miscoverage": float("nan"), "served_coverage": float("nan"), "evidence": 0.0}
    # In half-widths the interval is about [-1, 1]: residual.py's floor (a share of the metric's range) is moot.
    miscoverage = cross_fitted_miscoverage(z, 0.0)
    evidence = min(1.0, z.size / season)
    return {"weight": evidence * max(0.0, 1 - miscoverage / (1 - LEVEL)), "miscoverage": miscoverage,
            "served_coverage": float(np.mean(np.abs(z) <= 1)), "evidence": evidence}


# ---- the residual object the detector's veto reads ---------------------------------------------------------
class ChampionResidual:
    """Duck-types ``SeasonalResidual`` for ``CombinedDetector.score``: the champion's residual in half-widths
    at the metrics it forecasts, the detector's own seasonal residual elsewhere; ``veto`` is residual.py's.
    ``frame`` is the raw frame being scored (set by the patched ``score``)."""

    veto = SeasonalResidual.veto

    def __init__(self, seasonal: SeasonalResidual, champions: dict, lead: int, floors: dict[int, float],
                 weights: dict[int, float], metrics: list[str]):
        """``champions``: metric position -> fitted HeliosForecaster; ``floors``: the smallest half-width per
        position (residual.py's: a thousandth of the fit history's range); ``weights``: per position."""
        self.seasonal, self.champions, self.lead, self.floors, self.metrics = seasonal, champions, lead, floors, metrics
        self.weight_ = seasonal.weight_.copy()
        for position, weight in weights.items():
            self.weight_[position] = weight
        self.reach = seasonal.reach  # the served history is the baseline's: every variant scores the same windows
        self.frame: pd.DataFrame | None = None

    def standardised(self, values: np.ndarray) -> np.ndarray:
        out = self.seasonal.standardised(values)
        for position, model in self.champions.items():
            series = on_grid(self.frame[self.metrics[position]], model.step)
            cast = backcast(model, series, self.lead)
            residual = series.to_numpy() - cast.yhat
            floor = self.floors[position]
            with np.errstate(invalid="ignore", divide="ignore"):
                z = np.where(residual >= 0, residual / np.maximum(cast.upper - cast.yhat, floor),
                             residual / np.maximum(cast.yhat - cast.lower, floor))
            out[:, position] = pd.Series(z, index=series.index).reindex(self.frame.index).to_numpy()
        return out


# ---- variants, injected through the bench's own tenant_detector --------------------------------------------
_fitted: dict = {}
#: What each variant's fits gave (weights, leads, the champion's judgement), in order.
FITS: list[dict] = []


def cached(key, make):
    """``make()`` once per ``key`` (a fit history's span, a metric, a lead) across variants."""
    if key not in _fitted:
        _fitted[key] = make()
    return _fitted[key]


def champion_metrics(tenant, detector) -> list[str]:
    """The detector's metrics a champion forecasts, as the detector's residual view would take them (not
    replaced by their relation to the drivers)."""
    relations = detector.rarity.relations_
    replaced = {m for m in relations.targets if relations.replaces_[m]} if relations is not None else set()
    return [m for m in detector.metrics_ if m in tenant.forecast_metrics and m not in replaced]


def fit_champion(tenant, metric: str, history: pd.DataFrame):
    if training.forecast_drivers(tenant, metric):
        raise NotImplementedError("a champion reading its drivers: not needed for the demo tenants")
    return fit_forecaster(training.forecaster_for(tenant, metric, "helios"), history[metric].astype(float))


@dataclass
class Variant:
    name: str
    lead: int | None = None  # None: the detector's seasonal residual
    forced: bool = False  # the compared metrics' weight forced to 1

    def lead_for(self, model) -> int:
        return model.max_horizon if self.lead == -1 else self.lead


class Injected:
    """What the bench calls as ``tenant_detector(tenant)``: ``fit`` fits (once per history) the pipeline's
    detector and the champions, and returns a copy of the detector with this variant's residual."""

    def __init__(self, tenant, variant: Variant):
        self.tenant, self.variant = tenant, variant

    def fit(self, frame: pd.DataFrame):
        tenant, variant = self.tenant, self.variant
        span = (tenant.id, frame.index[0], frame.index[-1])
        detector = copy.deepcopy(cached(span, lambda: training.tenant_detector(tenant).fit(frame)))
        seasonal = detector.residual_
        compared = champion_metrics(tenant, detector)
        positions = {m: detector.metrics_.index(m) for m in compared}
        seasons = dict(detector.rarity.seasons_)
        entry = {"tenant": tenant.id, "variant": variant.name, "fit_end": frame.index[-1]}
        if variant.lead is None:
            if variant.forced:
                seasonal.weight_[[positions[m] for m in compared if positions[m] in seasons]] = 1.0
            entry["weights"] = {m: float(seasonal.weight_[positions[m]]) for m in compared}
            FITS.append(entry)
            return watched(detector, seasonal)
        models = {positions[m]: cached((*span, m), lambda m=m: fit_champion(tenant, m, frame)) for m in compared}
        lead = {p: variant.lead_for(model) for p, model in models.items()}
        judged = {p: cached((*span, p, lead[p]), lambda p=p, model=model: held_out_weight(
            model, frame[detector.metrics_[p]].astype(float), lead[p], seasons.get(p, model.week)))
            for p, model in models.items()}
        weights = {p: 1.0 if variant.forced else j["weight"] for p, j in judged.items()}
        values = known_causes_removed(frame, detector.metrics_, None)
        floors = {p: 1e-3 * max(float(np.ptp(values[:, p][np.isfinite(values[:, p])])), 1e-9) for p in models}
        (single_lead,) = set(lead.values())
        residual = ChampionResidual(seasonal, models, single_lead, floors, weights, detector.metrics_)
        detector.residual_ = residual
        entry |= {"lead": single_lead, "weights": {detector.metrics_[p]: w for p, w in weights.items()},
                  "judged": {detector.metrics_[p]: j for p, j in judged.items()},
                  "fallback": {detector.metrics_[p]: m.fallback_ for p, m in models.items()}}
        FITS.append(entry)
        return watched(detector, residual)


#: Timestamps of the rows whose page the veto took away (a metric at or above the threshold before, none
#: after), appended by every watched detector's score.
VETOED: list[pd.DatetimeIndex] = []


def watched(detector, residual):
    """``detector`` with its ``score`` handing the scored frame to ``residual`` (the champion reads the raw
    values and their timestamps) and its veto recording the pages it took away (``VETOED``)."""
    plain_score, plain_veto = detector.score, residual.veto

    def score(scored: pd.DataFrame, extra_events=()):
        residual.frame = scored
        return plain_score(scored, extra_events)

    def veto(score, values, z_threshold, threshold):
        vetoed = plain_veto(score, values, z_threshold, threshold)
        with np.errstate(invalid="ignore"):
            taken = ((score >= threshold) & (vetoed < threshold)).any(axis=1)
        VETOED.append(residual.frame.index[taken])
        return vetoed

    detector.score, residual.veto = score, veto
    return detector


def vetoed_pages(incidents, scored_from: pd.Timestamp) -> dict:
    """Rows (each counted once) from ``scored_from`` whose page the veto took away since ``VETOED`` was
    last cleared, inside an incident (or its ``GRACE``) and outside; clears ``VETOED``."""
    rows = pd.DatetimeIndex(sorted({t for taken in VETOED for t in taken.tz_convert("UTC")}), tz="UTC")
    VETOED.clear()
    rows = rows[rows >= scored_from]
    inside = np.zeros(len(rows), dtype=bool)
    for incident in incidents:
        inside |= (rows >= incident.start) & (rows < incident.end + bench.GRACE)
    return {"in": int(inside.sum()), "out": int((~inside).sum())}


def drill_schedule(tenant) -> list[InjectedAnomaly]:
    """The incidents ``bench.drill`` injects (its schedule, recomputed: it does not return them)."""
    kinds = bench.ANOMALY_KINDS[tenant.source.profile]
    step = tenant.step_timedelta
    starts = [(bench.AS_OF + pd.Timedelta(hours=h)).ceil(step) for h in range(26, 26 + 5 * 24, 7)]
    return [InjectedAnomaly("", kinds[n % len(kinds)], s, s + pd.Timedelta("20min"), 3.0) for n, s in enumerate(starts)]


def run(tenant, variant: Variant, days: int, drill: bool) -> dict:
    bench.tenant_detector = lambda t: Injected(t, variant)
    started = time.process_time()
    VETOED.clear()
    scored_from = bench.AS_OF - pd.Timedelta(days=days)
    one = bench.one_pass(tenant, days)
    one["vetoed"] = vetoed_pages(Simulator(tenant).anomalies(scored_from, bench.AS_OF), scored_from)
    drilled = gradual = None
    if drill:
        drilled = bench.drill(tenant)
        drilled["vetoed"] = vetoed_pages(drill_schedule(tenant), bench.AS_OF)
        gradual = gradual_drill(tenant, variant)
        gradual["vetoed"] = vetoed_pages(gradual_schedule(tenant), bench.AS_OF)
    fits = [e for e in FITS if e["tenant"] == tenant.id and e["variant"] == variant.name]
    return {"tenant": tenant.id, "variant": variant.name, "pass": one, "drill": drilled, "fits": fits,
            "gradual": gradual, "cpu": time.process_time() - started}


# ---- gradual incidents: what the drill's kinds (steps of 20 minutes) do not have -------------------------
#: A gradual incident: the load moves log-linearly to x1/3 (``slow_drop``) or x3 (``slow_rise``) over
#: ``RAMP``, stays there for ``HOLD``, then is back; the other metrics follow it as the simulator's do.
RAMP, HOLD = pd.Timedelta("60min"), pd.Timedelta("30min")


@contextmanager
def gradual_load(start: pd.Timestamp, factor: float):
    """The simulator's demand times ``factor ** share`` from ``start`` (share: 0 to 1 over ``RAMP``) until
    ``start + RAMP + HOLD`` (patched into ``Simulator._anomaly_effects``: the outage factor multiplies demand)."""
    original = Simulator._anomaly_effects

    def effects(self, index):
        out = original(self, index)
        share = np.clip((index - start) / RAMP, 0, 1)
        inside = (index >= start) & (index < start + RAMP + HOLD)
        out["outage"] = np.where(inside, out["outage"] * factor ** share, out["outage"])
        return out

    Simulator._anomaly_effects = effects
    try:
        yield
    finally:
        Simulator._anomaly_effects = original


def gradual_schedule(tenant) -> list[InjectedAnomaly]:
    """The drill's schedule with gradual incidents of the load (the tenant's first scaling metric)."""
    step, load = tenant.step_timedelta, tenant.scaling[0].metric
    starts = [(bench.AS_OF + pd.Timedelta(hours=h)).ceil(step) for h in range(26, 26 + 5 * 24, 7)]
    kinds = [("slow_drop", 1 / 3), ("slow_rise", 3.0)]
    return [InjectedAnomaly(load, kinds[n % 2][0], s, s + RAMP + HOLD, kinds[n % 2][1]) for n, s in enumerate(starts)]


def gradual_drill(tenant, variant: Variant) -> dict:
    """The drill's schedule (every 7 hours over five days after the training window) with gradual
    incidents instead, slow drop and slow rise in turn, scored as the drill scores (``bench.drill``)."""
    bench.tenant_detector = lambda t: Injected(t, variant)
    metrics = sorted(tenant.anomaly_metrics)
    fit = Simulator(tenant).fetch(bench.AS_OF - pd.Timedelta(days=tenant.training.history_days), bench.AS_OF)
    detector = bench.tenant_detector(tenant).fit(fit[metrics])  # the drill's (the same history)
    held = bench.served_history(tenant, detector)

    def cases():
        for incident in gradual_schedule(tenant):
            with gradual_load(incident.start, incident.magnitude):
                frame = Simulator(tenant).fetch(incident.start - held, incident.end + bench.AFTER)[metrics]
            yield incident, frame

    with bench.helios_home_restored():
        os.environ["HELIOS_HOME"] = tempfile.mkdtemp(prefix="helios-gradual-")  # no incidents injected before
        incidents, matched = bench.tally(tenant, detector, cases())
    return bench.summary(tenant.id, incidents, matched, len(incidents) * (bench.BEFORE + bench.AFTER))


# ---- cost: one metric's backcast over the rows the service holds ------------------------------------------
def cost(tenant, days: int, repeats: int = 3) -> list[dict]:
    """Milliseconds (fastest of ``repeats``) to compute one metric's forecasts over the served frame: the
    champion's backcast at each lead against the seasonal forecast (``SeasonalResidual.forecast``)."""
    metrics = sorted(tenant.anomaly_metrics)
    scored_from = bench.AS_OF - pd.Timedelta(days=days)
    start = scored_from - pd.Timedelta(days=tenant.training.history_days)
    frame = bench.Simulator(tenant).fetch(start, bench.AS_OF)[metrics]
    fit = frame[frame.index < scored_from]
    detector = cached((tenant.id, fit.index[0], fit.index[-1]), lambda: training.tenant_detector(tenant).fit(fit))
    held = bench.served_history(tenant, detector)
    served = frame[frame.index >= frame.index[-1] - held]
    rows = []
    for metric in champion_metrics(tenant, detector):
        model = cached((tenant.id, fit.index[0], fit.index[-1], metric), lambda m=metric: fit_champion(tenant, m, fit))
        position = detector.metrics_.index(metric)
        season = dict(detector.rarity.seasons_).get(position)
        values = known_causes_removed(served, detector.metrics_, detector.expected(served))
        timings = {}
        if season is not None:
            seasonal = SeasonalResidual([(0, season)], 1, detector.rarity.level_window)
            timings["seasonal"] = best_of(repeats, seasonal.forecast, values[:, [position]])
        for lead in sorted({1, HOUR_AT_FIVE_MINUTES, model.max_horizon}):
            timings[f"champion L={lead}"] = best_of(repeats, backcast, model, served[metric], lead)
        rows.append({"tenant": tenant.id, "metric": metric, "rows": len(served), "ms": timings})
    return rows


def best_of(repeats: int, call, *args) -> float:
    seconds = []
    for _ in range(repeats):
        started = time.process_time()
        call(*args)
        seconds.append(time.process_time() - started)
    return 1000 * min(seconds)


# ---- report ------------------------------------------------------------------------------------------------
VARIANTS = {
    "seasonal": Variant("seasonal"),
    "champion L=1": Variant("champion L=1", 1),
    "champion L=12": Variant("champion L=12", HOUR_AT_FIVE_MINUTES),
    "champion L=H": Variant("champion L=H", -1),
    "seasonal w=1": Variant("seasonal w=1", forced=True),
    "champion L=1 w=1": Variant("champion L=1 w=1", 1, forced=True),
    "champion L=12 w=1": Variant("champion L=12 w=1", HOUR_AT_FIVE_MINUTES, forced=True),
    "champion L=H w=1": Variant("champion L=H w=1", -1, forced=True),
}


def describe_weights(fits: list[dict]) -> str:
    """The compared metrics' weights at the pass's fit and the drill's (pass / drill)."""
    fits = list({f["fit_end"]: f for f in fits}.values())  # the gradual drill fits on the drill's history
    names = sorted({m for f in fits for m in f["weights"]})
    parts = []
    for name in names:
        weights = " / ".join(f"{f['weights'][name]:.2f}" for f in fits if name in f["weights"])
        judged = [f["judged"][name] for f in fits if "judged" in f and name in f["judged"]]
        coverage = " / ".join(f"{j['served_coverage']:.2f}" for j in judged)
        parts.append(f"{name} {weights}" + (f" (covered {coverage})" if judged else ""))
    return "; ".join(parts) or "-"


def render(results: list[dict], costs: list[dict]) -> list[str]:
    def vetoed(part: dict | None) -> str:
        return f"{part['vetoed']['in']} / {part['vetoed']['out']}" if part else "-"

    lines = [
        "| tenant | variant | lead | weights pass / drill (served interval's coverage there) | pass found | precision | false "
        "| false / week | drill found | drill false | drill per kind | gradual found | gradual false "
        "| gradual median delay | gradual per kind | pages vetoed in / out of incidents: pass; drill; gradual |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        p, d, g = r["pass"], r["drill"], r["gradual"]
        leads = sorted({f["lead"] for f in r["fits"] if "lead" in f})
        cells = [r["tenant"], r["variant"], ", ".join(map(str, leads)) or "-", describe_weights(r["fits"]),
                 f"{p['found']}/{p['incidents']}", f"{p['precision']:.2f}", p["false"], f"{p['false_per_week']:.1f}"]
        cells += [f"{d['found']}/{d['incidents']}", d["false"], d["per_kind"]] if d else ["-"] * 3
        cells += [f"{g['found']}/{g['incidents']}", g["false"], f"{g['delay']:.0f}", g["per_kind"]] if g else ["-"] * 4
        cells.append(f"{vetoed(p)}; {vetoed(d)}; {vetoed(g)}")
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    if costs:
        lines += ["", "| tenant | metric | served rows | ms (CPU, fastest of 3) |", "|---|---|---|---|"]
        lines += [f"| {c['tenant']} | {c['metric']} | {c['rows']} | "
                  + ", ".join(f"{k} {v:.0f}" for k, v in c["ms"].items()) + " |" for c in costs]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="write the tables here (markdown)")
    parser.add_argument("--days", type=int, default=28)
    parser.add_argument("--tenant", action="append", help="only these tenants (default: every simulated one)")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--no-drill", action="store_true")
    parser.add_argument("--no-cost", action="store_true")
    args = parser.parse_args()
    tenants = bench.simulated_tenants(args.tenant)
    results, costs = [], []
    for tenant in tenants:
        for name in args.variants:
            results.append(run(tenant, VARIANTS[name], args.days, not args.no_drill))
            print("\n".join(render(results[-1:], [])[2:]), f"({results[-1]['cpu']:.0f} CPU-s)", flush=True)
        if not args.no_cost:
            costs += cost(tenant, args.days)
    lines = render(results, costs)
    print("\n".join(lines))
    if args.out:
        with open(args.out, "w") as handle:
            handle.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
