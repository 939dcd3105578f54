"""Training and promotion for one tenant, as plain functions the Dagster assets (and notebooks) call.

Each forecast metric gets a rolling-origin backtest of every candidate kind against the
seasonal-naive baseline; the best kind is refitted on the whole window, logged to MLflow with its
numbers and a forecast-vs-actual plot, and registered as ``challenger``. Promotion then decides,
with the numbers recorded on the version, whether the challenger becomes ``champion``.

Retrain only what changed (#20.2): every forecaster and detector version carries a ``fingerprint``
tag, hashes of what its fit saw (the data window, the part of the tenant's configuration the fit
reads, the code version). A retrain whose fingerprint equals the champion's skips the fit and
returns the champion, saying so (``skipped``); one whose data window alone moved warm-starts the
champion's kind where it can continue boosting (``core.ml.warm_retrain``, and ``warm_start`` on the
result and the version says what it continued and saved); ``force=True`` fits every model from scratch.

Past 400 lines: the three trained kinds (forecasters, detector, planner) share the promotion record
and the champion look-ups here; the fingerprints are in ``core.ml.fingerprints``, the warm start's
choice of base and its record in ``core.ml.warm_retrain``, the pyfunc examples in ``core.ml.tracking``.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import mlflow
import numpy as np
import pandas as pd

from helios_pipelines.core.ml import warm_retrain
from helios_pipelines.core.ml.capacity_learning import fleet_metrics, fleet_summary, learn_fleet_dicts
from helios_pipelines.core.ml.evaluation import BacktestResult, backtest, decide_promotion
from helios_pipelines.core.ml.events import EventSchedule
from helios_pipelines.core.ml.fingerprints import (
    ChampionMatch,
    against_champion,
    detector_config,
    fingerprint,
    forecaster_config,
)
from helios_pipelines.core.ml.models.base import AnomalyDetector, Forecaster, fit_forecaster
from helios_pipelines.core.ml.models.calibration import LabelledEpisode, calibrate
from helios_pipelines.core.ml.models.capacity import CapacityPlanner
from helios_pipelines.core.ml.models.detectors import make_detector
from helios_pipelines.core.ml.models.forecasters import make_forecaster
from helios_pipelines.core.ml.peaks import learn_peaks
from helios_pipelines.core.ml.tracking import (
    CHALLENGER,
    CHAMPION,
    RegisteredVersion,
    Tracker,
    VersionTags,
    history_example,
    naive_utc,
    planner_example,
    registered_model_name,
)
from helios_pipelines.core.tenants import TenantConfig

BASELINE = "seasonal_naive"
# Prophet against Helios' multi-horizon XGBoost; the lag-only XGBoost reference lives in the benchmark.
CANDIDATES = ("prophet", "helios")
DETECTOR_KIND = "combined"
# Share of the detector's recent window it may flag before it is judged too noisy to promote.
DETECTOR_FLAG_BUDGET = 0.02


@dataclass
class ForecastTraining:
    metric: str
    horizon_steps: int
    scores: dict[str, dict]  # kind -> backtest metrics (BacktestResult.metrics)
    winner: str
    version: RegisteredVersion
    fit_seconds: float
    skipped: bool = False  # the champion's fingerprint matched: no fit, the champion is the result
    fit_note: str = ""  # why it was fitted or skipped, in words (the asset's metadata shows it)
    seconds: dict[str, float] = field(default_factory=dict)  # each candidate's backtest, wall
    warm_start: dict | None = None  # the warm-started kind's record (warm_retrain.record), if any


@dataclass
class DetectorTraining:
    version: RegisteredVersion
    stats: dict
    skipped: bool = False
    fit_note: str = ""


@dataclass
class PromotionRecord:
    name: str
    challenger: str
    champion_before: str | None
    promoted: bool
    reason: str
    numbers: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def forecaster_for(tenant: TenantConfig, metric: str, kind: str) -> Forecaster:
    horizon_minutes = max(tenant.metrics[metric].forecast.horizons)
    return make_forecaster(
        kind,
        step=tenant.step_timedelta,
        max_horizon=horizon_steps(tenant, horizon_minutes),
        timezone=tenant.timezone,
        regions=[(r.timezone, r.share) for r in tenant.regions],
        seasonality=tenant.metrics[metric].seasonality,
        drivers=forecast_drivers(tenant, metric),
        events=EventSchedule([e for e in tenant.events if not e.metrics or metric in e.metrics]),
        metric=metric,
        seed=tenant.training.seed,
    )


def forecast_drivers(tenant: TenantConfig, metric: str) -> list[str]:
    """The metrics whose past the metric's forecaster reads: its drivers where the tenant asks for it
    (``training.forecast_from_drivers``)."""
    return tenant.drivers_of(metric) if tenant.training.forecast_from_drivers else []


def horizon_steps(tenant: TenantConfig, minutes: int) -> int:
    return max(1, math.ceil(pd.Timedelta(minutes=minutes) / tenant.step_timedelta))


def _plot_forecast(series: pd.Series, forecast: pd.DataFrame, title: str):
    # A bare Figure (no pyplot): no global figure registry to leak across many runs, no GUI backend.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    ax = fig.subplots()
    start = forecast["timestamp"].iloc[0] - 6 * (forecast["timestamp"].iloc[-1] - forecast["timestamp"].iloc[0])
    actual = series[series.index >= start]
    ax.plot(actual.index, actual.to_numpy(), color="black", lw=1, label="actual")
    ax.plot(forecast["timestamp"], forecast["yhat"], color="tab:blue", lw=1.5, label="forecast")
    ax.fill_between(forecast["timestamp"], forecast["yhat_lower"], forecast["yhat_upper"], alpha=0.25, label="80% interval")
    ax.set_title(title)
    ax.legend(loc="upper left")
    fig.autofmt_xdate()
    return fig


# Metrics backtested side by side (threads: XGBoost and Stan release the GIL, so one metric's Python
# feature work overlaps another's tree building). Four, each booster on one thread (XGB_THREADS): on two
# cores, two metrics at a time left a core idle in each one's Python phases (bench/results/train.md).
PARALLEL_METRICS = 4


@dataclass
class _Backtests:
    """What a metric's candidates gave: computed off the main thread, logged to MLflow on it."""

    results: dict[str, BacktestResult]
    seconds: dict[str, float]  # each candidate's whole backtest, wall
    last_fold: dict[str, tuple[Forecaster, pd.Timestamp]]
    winner: str
    model: Forecaster  # the winner refitted on the whole window
    fit_seconds: float
    warm_start: dict | None = None


FORCED = ChampionMatch(None, (), "forced")


def _backtest_candidates(tenant: TenantConfig, metric: str, series: pd.Series, drivers: pd.DataFrame | None,
                         steps: int, candidates: tuple[str, ...], base: warm_retrain.WarmBase | None) -> _Backtests:
    """Every candidate's backtest and the winner's refit; the kind of ``base`` (if any) warm-started.
    ``drivers``: the metric's drivers' history, for a candidate that reads them."""
    results, seconds, last_fold, folds = {}, {}, {}, {}
    for kind in (BASELINE, *candidates):
        fitted: list[Forecaster] = []
        warm = base is not None and base.kind == kind

        def factory(k=kind, fitted=fitted, warm=warm):
            model = forecaster_for(tenant, metric, k)
            fitted.append(warm_retrain.offer(model, base, fitted) if warm else model)
            return fitted[-1]

        started = time.perf_counter()
        results[kind] = backtest(factory, series, steps, tenant.training.backtest_folds, drivers=drivers)
        seconds[kind] = time.perf_counter() - started
        last_fold[kind] = (fitted[-1], pd.Timestamp(results[kind].origins[-1]))
        folds[kind] = fitted
    winner = min(results, key=lambda k: (results[k].metrics["mase"], k != BASELINE))
    started = time.perf_counter()
    model = forecaster_for(tenant, metric, winner)
    warm_refit = base is not None and base.kind == winner
    model = fit_forecaster(model.continue_from(base.model) if warm_refit else model, series, drivers)
    fit_seconds = time.perf_counter() - started
    warm_start = None if base is None else warm_retrain.record(
        base, folds[base.kind], results[base.kind].fit_seconds, model if warm_refit else None)
    return _Backtests(results, seconds, last_fold, winner, model, fit_seconds, warm_start)


def train_forecasters(
    tenant: TenantConfig,
    features: pd.DataFrame,
    tracker: Tracker,
    tags: dict[str, str],
    candidates: tuple[str, ...] = CANDIDATES,
    force: bool = False,
) -> dict[str, ForecastTraining]:
    """Backtest, pick and register a challenger for each forecast metric of the tenant (PARALLEL_METRICS
    metrics at a time); a metric whose fingerprint equals its champion's keeps the champion without a
    fit, one whose data window alone moved warm-starts the champion's kind (``core.ml.warm_retrain``);
    ``force`` fits everything from scratch."""
    trained, todo = {}, {}
    for metric in tenant.forecast_metrics:
        series = features[metric].astype(float)
        names = forecast_drivers(tenant, metric)
        drivers = features[names].astype(float) if names else None
        steps = horizon_steps(tenant, max(tenant.metrics[metric].forecast.horizons))
        seen = series if drivers is None else pd.concat([series, drivers], axis=1)
        fitted_on = fingerprint(seen, forecaster_config(tenant, metric, (BASELINE, *candidates)))
        name = registered_model_name(tenant.id, "forecaster", metric)
        match = FORCED if force else against_champion(tracker, name, fitted_on)
        if match.unchanged:
            trained[metric] = _kept(metric, steps, match.champion, match.why)
            continue
        base = warm_retrain.warm_base(tracker, match, candidates)
        why = f"warm start of {base.kind} from champion v{base.version}" if base else "fitted"
        todo[metric] = (series, drivers, steps, fitted_on, name, f"{why} ({match.why})", base)
    with ThreadPoolExecutor(max_workers=PARALLEL_METRICS, thread_name_prefix="backtest") as pool:
        running = {m: pool.submit(_backtest_candidates, tenant, m, series, drivers, steps, candidates, base)
                   for m, (series, drivers, steps, *_, base) in todo.items()}
        for metric, (series, drivers, steps, fitted_on, name, why, _) in todo.items():
            trained[metric] = _register(tenant, tracker, tags, metric, series, drivers, steps, fitted_on, name,
                                        running[metric].result(), why)
    return {m: trained[m] for m in tenant.forecast_metrics}


def _register(tenant, tracker, tags, metric, series, drivers, steps, fitted_on, name, done: _Backtests,
              why) -> ForecastTraining:
    """Log a metric's backtests (a nested run per candidate), the plot and the winner; register it."""
    scores = {k: r.metrics for k, r in done.results.items()}
    winner = done.winner
    with tracker.start_run(tenant.id, f"forecaster {metric}", tags={"metric": metric, **tags}):
        mlflow.log_params({"metric": metric, "horizon_steps": steps, "folds": tenant.training.backtest_folds})
        for kind, result in done.results.items():
            warm = done.warm_start if done.warm_start and done.warm_start["kind"] == kind else None
            run_tags = {"metric": metric, "kind": kind} | ({"warm_start": json.dumps(warm)} if warm else {})
            with tracker.start_run(tenant.id, f"{metric} {kind}", nested=True, tags=run_tags):
                mlflow.log_metrics({k: v for k, v in result.metrics.items() if np.isfinite(v)})
                mlflow.log_metrics({"mean_fit_seconds": result.mean_fit_seconds, "backtest_seconds": done.seconds[kind]})
        # The plot re-uses the winner's last backtest model: forecast from its origin vs what happened.
        fold_model, origin = done.last_fold[winner]
        before = series[series.index < origin]
        mlflow.log_figure(
            _plot_forecast(series, fold_model.predict(steps, before, drivers=drivers),
                           f"{tenant.id} {metric}: {winner}, last backtest fold"),
            "forecast_vs_actual.png",
        )
        mlflow.log_metrics({f"winner_{k}": v for k, v in scores[winner].items() if np.isfinite(v)})
        version = tracker.log_model(
            done.model,
            name,
            input_example=history_example(series, done.model, drivers),
            tags=VersionTags(
                **tags,
                metric=metric,
                fingerprint=fitted_on,
                backtest=scores[winner],
                baseline_backtest=scores[BASELINE],
                backtest_mase=f"{scores[winner]['mase']:.4f}",
                baseline_mase=f"{scores[BASELINE]['mase']:.4f}",
                candidates={k: round(v["mase"], 4) for k, v in scores.items()},
                warm_start=done.warm_start,
            ),
        )
    return ForecastTraining(metric, steps, scores, winner, version, done.fit_seconds, fit_note=why,
                            seconds=done.seconds, warm_start=done.warm_start)


def _kept(metric: str, steps: int, champion: RegisteredVersion, why: str) -> ForecastTraining:
    """The champion as this run's result for a metric whose fit was skipped: its recorded numbers."""
    tags = champion.tags
    scores = {kind: {"mase": mase} for kind, mase in (tags.candidates or {}).items()}
    scores |= {BASELINE: tags.baseline_backtest or {}, tags.kind: tags.backtest or {}}
    return ForecastTraining(metric, steps, scores, tags.kind, champion, 0.0, skipped=True, fit_note=why)


def _champion_backtest(tracker: Tracker, name: str) -> tuple[str | None, dict | None]:
    champion = tracker.version_by_alias(name, CHAMPION)
    if champion is None:
        return None, None
    return champion.version, champion.tags.backtest


def promote_forecasters(
    tenant: TenantConfig, trained: dict[str, ForecastTraining], tracker: Tracker
) -> list[PromotionRecord]:
    """Challenger -> champion when it beats the current champion and the seasonal-naive baseline.

    A tenant on manual review keeps the decision as a recommendation only. When no candidate beats
    the baseline and the metric has no champion yet, the baseline itself is promoted: serving the
    honest best is better than serving nothing, and the record says so.
    """
    records = []
    for result in trained.values():
        name = result.version.name
        if result.skipped:
            records.append(PromotionRecord(name, result.version.version, result.version.version, False, result.fit_note))
            continue
        champion_version, champion_scores = _champion_backtest(tracker, name)
        if champion_version == result.version.version:
            continue
        challenger = result.scores[result.winner]
        decision = decide_promotion(challenger, champion_scores, result.scores[BASELINE])
        promote, reason = decision.promote, decision.reason
        if not promote and result.winner == BASELINE and champion_version is None:
            promote, reason = True, "no candidate beat the seasonal-naive baseline; the baseline serves until one does"
        if promote and tenant.training.promotion == "manual":
            promote, reason = False, f"manual review: would promote ({reason})"
        records.append(
            _record(tracker, name, result.version.version, champion_version, promote, reason, decision.to_dict())
        )
    return records


def _record(tracker, name, challenger, champion_before, promote, reason, numbers) -> PromotionRecord:
    if promote:
        tracker.set_alias(name, CHAMPION, challenger)
    tracker.tag_version(name, challenger, VersionTags(promotion={"promoted": promote, "reason": reason}))
    return PromotionRecord(name, challenger, champion_before, promote, reason, numbers)


def tenant_detector(tenant: TenantConfig) -> AnomalyDetector:
    """The detector the pipeline trains for a tenant, unfitted: its sensitivity from the config."""
    sensitivity = tenant.alerts.anomaly
    return make_detector(
        DETECTOR_KIND,
        z_threshold=tenant.alerts.thresholds.anomaly_alert,
        trigger_window=sensitivity.trigger_window,
        trigger_share=sensitivity.trigger_share,
        recovery_window=sensitivity.recovery_window,
        # Known inputs: the load its scaling follows drives the other metrics; scheduled events are expected.
        drivers=sorted({s.metric for s in tenant.scaling} & set(tenant.anomaly_metrics)),
        # ... and its utilisation is the pressure latency and queues follow.
        pressure=sorted({s.utilization_metric for s in tenant.scaling if s.utilization_metric}
                        & set(tenant.anomaly_metrics)),
        events=tuple(tenant.events),
        timezone=tenant.timezone,  # a driver's daily and weekly season repeats on the tenant's clock
        forest_weight=0.0,
        seed=tenant.training.seed,
    )


def train_detector(
    tenant: TenantConfig,
    features: pd.DataFrame,
    tracker: Tracker,
    tags: dict[str, str],
    ground_truth: list | None = None,
    verdicts: Sequence[LabelledEpisode] = (),
    force: bool = False,
) -> DetectorTraining:
    """Fit the anomaly detector on all but the last day, measure how often it flags the last day
    (and its recall of known anomalies, where the source knows them), then refit, calibrate its
    per-metric thresholds with the operators' ``verdicts`` (``models/calibration.py``; the run logs the
    thresholds before and after) and register; the champion without a fit when its fingerprint
    (verdicts included) matches (unless ``force``)."""
    metrics = sorted(tenant.anomaly_metrics)
    frame = features[metrics].astype(float)
    holdout_start = frame.index[-1] - pd.Timedelta("1D")
    name = registered_model_name(tenant.id, "anomaly_detector")
    fitted_on = fingerprint(frame, detector_config(tenant, DETECTOR_KIND) | {"verdicts": [repr(v) for v in verdicts]})
    match = FORCED if force else against_champion(tracker, name, fitted_on)
    if match.unchanged:
        champion = match.champion
        return DetectorTraining(champion, champion.tags.evaluation or {}, skipped=True, fit_note=match.why)

    with tracker.start_run(tenant.id, "anomaly detector", tags=tags):
        probe = tenant_detector(tenant).fit(frame[frame.index < holdout_start])
        scores = probe.score(frame)
        recent = scores.loc[scores.index >= holdout_start, "combined"]
        flagged = recent >= probe.threshold
        stats = {"holdout_flag_rate": float(flagged.mean()) if len(recent) else 0.0}
        if ground_truth is not None:
            stats |= detection_recall(scores["combined"] >= probe.threshold, ground_truth, scores.index[0])
        mlflow.log_params({"kind": DETECTOR_KIND, "metrics": ",".join(metrics), "threshold_z": tenant.alerts.thresholds.anomaly_alert})
        mlflow.log_metrics(stats)
        detector = tenant_detector(tenant).fit(frame)
        mlflow.log_metrics(calibrate(detector, frame, list(verdicts)).mlflow_metrics())
        tail = frame.iloc[-max(detector.min_history, 60) :]
        example = tail.set_axis(naive_utc(tail.index)).reset_index(names="timestamp")
        version = tracker.log_model(detector, name, input_example=example,
                                    tags=VersionTags(**tags, evaluation=stats, fingerprint=fitted_on))
    return DetectorTraining(version, stats, fit_note=f"fitted ({match.why})")


def detection_recall(flags: pd.Series, ground_truth: list, scored_from: pd.Timestamp) -> dict:
    """Event recall (an injected anomaly counts as found when any of its rows is flagged) and the
    share of flagged rows that fall inside an injected anomaly (precision by rows)."""
    events = [a for a in ground_truth if a.start >= scored_from]
    inside = pd.Series(False, index=flags.index)
    found = 0
    for anomaly in events:
        window = (flags.index >= anomaly.start) & (flags.index < anomaly.end + pd.Timedelta("10min"))
        inside |= window
        found += bool(flags[window].any())
    flagged = int(flags.sum())
    return {
        "injected_anomalies": float(len(events)),
        "recall": found / len(events) if events else float("nan"),
        "precision": float((flags & inside).sum() / flagged) if flagged else float("nan"),
    }


def promote_detector(tenant: TenantConfig, trained: DetectorTraining, tracker: Tracker) -> PromotionRecord:
    version, stats = trained.version, trained.stats
    if trained.skipped:
        return PromotionRecord(version.name, version.version, version.version, False, trained.fit_note)
    champion_version, _ = _champion_backtest(tracker, version.name)
    rate = stats["holdout_flag_rate"]
    promote = rate <= DETECTOR_FLAG_BUDGET
    reason = (
        f"flags {rate:.2%} of the last day (budget {DETECTOR_FLAG_BUDGET:.0%})"
        if promote
        else f"too noisy: flags {rate:.2%} of the last day, over the {DETECTOR_FLAG_BUDGET:.0%} budget"
    )
    if promote and tenant.training.promotion == "manual":
        promote, reason = False, f"manual review: would promote ({reason})"
    return _record(tracker, version.name, version.version, champion_version, promote, reason, stats)


def train_capacity_planner(tenant: TenantConfig, tracker: Tracker, tags: dict[str, str],
                           history: pd.DataFrame | None = None, source=None) -> dict | None:
    """The planner: configuration plus the capacity per replica and start-up seconds learned from
    ``history`` and the replica counts in ``source`` (core.ml.capacity_learning; the configured values
    where the series are missing or a learned value is flagged for review), and the recurring peaks
    learned from ``history`` (core.ml.peaks), which the scorecards score like events. A new version (the
    ``challenger``) only when it differs from the champion's and the challenger's. Promotion decides in
    ``champions`` (``promote_capacity_planner``), like every other model."""
    if not tenant.scaling:
        return None
    fleet = learn_fleet_dicts(tenant, history, source)
    peaks = learn_peaks(tenant, history)
    planner = CapacityPlanner.from_tenant(tenant, fleet, peaks.to_dict())
    config_hash = hashlib.sha256(json.dumps(planner.manifest(), sort_keys=True, default=str).encode()).hexdigest()[:16]
    name = registered_model_name(tenant.id, "capacity_planner")
    summary = fleet_summary(fleet)
    for alias in (CHAMPION, CHALLENGER):
        existing = tracker.version_by_alias(name, alias)
        if existing is not None and existing.tags.config_hash == config_hash:
            return {"name": name, "version": existing.version, "config_hash": config_hash, "fleet": summary,
                    "peaks": peaks.note}
    with tracker.start_run(tenant.id, "capacity planner", tags=tags):
        mlflow.log_dict(planner.manifest(), "capacity_planner.json")
        mlflow.log_metrics(fleet_metrics(fleet) | {"learned_peaks": len(peaks.peaks)})
        mlflow.log_dict(peaks.to_dict(), "learned_peaks.json")
        version = tracker.log_model(planner, name, input_example=planner_example(planner), tags=VersionTags(
            **tags, config_hash=config_hash, fleet=summary, peaks=peaks.to_dict(),
            backtest={s: {k: v["backtest"] for k, v in values.items()} for s, values in fleet.items()}))
    return {"name": name, "version": version.version, "config_hash": config_hash, "fleet": summary, "peaks": peaks.note}


def promote_capacity_planner(tenant: TenantConfig, planner: dict, tracker: Tracker) -> PromotionRecord:
    """The planner version of the current configuration becomes ``champion``, unless the tenant is on
    manual review (then it is a recommendation, as for every other model)."""
    name, version = planner["name"], planner["version"]
    champion_version, _ = _champion_backtest(tracker, name)
    if champion_version == version:
        return PromotionRecord(name, version, champion_version, False, "configuration unchanged")
    promote, reason = True, f"scaling configuration or learned values changed ({planner.get('fleet', 'configured values')})"
    if tenant.training.promotion == "manual":
        promote, reason = False, f"manual review: would promote ({reason})"
    return _record(tracker, name, version, champion_version, promote, reason, {"config_hash": planner["config_hash"]})
