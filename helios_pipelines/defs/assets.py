"""The per-tenant pipeline as Dagster assets: thin shells over ``helios_pipelines.core``.

tenant_config -> raw_metrics -> validated_metrics (GX, asset checks) -> features ->
forecast_candidates, anomaly_detector, capacity_model -> champions (promotion) -> tenant_bento.

Every asset reads the tenant's configuration from ``tenant_config``, the snapshot this run took of
its YAML, never the file itself: an edit made mid-run cannot train with one config and package with
another, and a later run of a subset (the Bento rebuild) packages with the config that trained.
"""


import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    Config,
    MetadataValue,
    Output,
    asset,
)

from helios_pipelines.core.ml.events import EventSchedule
from helios_pipelines.core.ml.features import build_feature_frame
from helios_pipelines.core.ml.training import (
    DetectorTraining,
    promote_capacity_planner,
    promote_detector,
    promote_forecasters,
    train_capacity_planner,
    train_detector,
    train_forecasters,
)
from helios_pipelines.core.ml.validation import validate_metrics
from helios_pipelines.core.sources.base import SourceError
from helios_pipelines.core.tenants import TenantConfig
from helios_pipelines.defs.partitions import tenant_partitions
from helios_pipelines.defs.resources import (
    BentoPackagerResource,
    MetricsSourceResource,
    MLflowResource,
    OperatorVerdictsResource,
    TenantRegistryResource,
)

GROUP = "helios"


class RetrainConfig(Config):
    """Run config of the training assets (#20.2): a model whose data window, configuration and code
    version match its champion's training (the fingerprint on the version) is not refitted; a forecaster
    whose window alone moved continues the champion's fit where its kind can (``core.ml.warm_retrain``)."""

    force: bool = False  # fit every model from scratch, even when the fingerprint matches the champion's


def _window_tags(frame: pd.DataFrame, source: str) -> dict[str, str]:
    return {"data_start": str(frame.index.min()), "data_end": str(frame.index.max()), "source": source}


@asset(partitions_def=tenant_partitions, group_name=GROUP)
def tenant_config(context: AssetExecutionContext, tenants: TenantRegistryResource) -> Output[TenantConfig]:
    """The tenant's validated configuration, read once per run from the registry."""
    tenant = tenants.tenant(context.partition_key)
    return Output(
        tenant,
        metadata={
            "source": tenant.source.type,
            "step": tenant.step,
            "metrics": len(tenant.metrics),
        },
    )


@asset(partitions_def=tenant_partitions, group_name=GROUP)
def raw_metrics(tenant_config: TenantConfig, metrics_source: MetricsSourceResource) -> Output[pd.DataFrame]:
    """The tenant's history over its training window, on its step; counters as rates, gaps as NaN."""
    tenant = tenant_config
    end = metrics_source.window_end().floor(tenant.step_timedelta)
    start = end - pd.Timedelta(days=tenant.training.history_days)
    try:
        frame = metrics_source.source(tenant).fetch(start, end)
    except SourceError:
        raise
    except Exception as exc:  # a source's own failure still names the tenant it failed for
        raise SourceError(f"tenant '{tenant.id}': fetching metrics from {tenant.source.type} failed: {exc}") from exc
    coverage = frame.notna().mean()
    return Output(
        frame,
        metadata={
            "rows": len(frame),
            "metrics": len(frame.columns),
            "window": f"{start} .. {end}",
            "source": tenant.source.type,
            "min_coverage": float(coverage.min()),
            "coverage": MetadataValue.json({k: round(float(v), 4) for k, v in coverage.items()}),
        },
    )


@asset(
    partitions_def=tenant_partitions,
    group_name=GROUP,
    check_specs=[
        AssetCheckSpec("time_and_history", asset="validated_metrics", blocking=True,
                       description="timestamps strictly increasing, at least two days of history"),
        AssetCheckSpec("coverage", asset="validated_metrics", blocking=True,
                       description="every trained metric present and covering its min_coverage of the grid"),
        AssetCheckSpec("value_ranges", asset="validated_metrics",
                       description="values within the configured min/max (a warning: anomalies live out there)"),
    ],
)
def validated_metrics(context: AssetExecutionContext, tenant_config: TenantConfig, raw_metrics: pd.DataFrame):
    """raw_metrics that passed the tenant's Great Expectations suite; a blocking failure stops this tenant."""
    tenant = tenant_config
    summary = validate_metrics(raw_metrics, tenant)
    context.log.info(summary.report())
    yield Output(
        raw_metrics,
        metadata={
            "rows": summary.rows,
            "success": summary.success,
            "report": MetadataValue.md("```\n" + summary.report() + "\n```"),
            "coverage": MetadataValue.json({k: round(v, 4) for k, v in summary.coverage.items()}),
            "longest_gap_steps": MetadataValue.json(summary.longest_gap_steps),
        },
    )
    groups = {
        "time_and_history": lambda c: c.column in (None, "timestamp"),
        "coverage": lambda c: c.name in ("column present", "expect_column_values_to_not_be_null") and c.blocking,
        "value_ranges": lambda c: c.name == "expect_column_values_to_be_between",
    }
    for check, member in groups.items():
        checks = [c for c in summary.checks if member(c)]
        failed = [c for c in checks if not c.success]
        yield AssetCheckResult(
            check_name=check,
            passed=not failed,
            severity=AssetCheckSeverity.ERROR if check != "value_ranges" else AssetCheckSeverity.WARN,
            description="; ".join(c.line for c in failed) or f"{len(checks)} expectations passed",
            metadata={"failed": len(failed), "checked": len(checks)},
        )


@asset(partitions_def=tenant_partitions, group_name=GROUP)
def features(tenant_config: TenantConfig, validated_metrics: pd.DataFrame) -> Output[pd.DataFrame]:
    """One frame per tenant shared by every model: metrics, calendar in the players' time zones,
    scheduled-event flags, rolling statistics and gaming signals."""
    tenant = tenant_config
    frame = build_feature_frame(
        validated_metrics, tenant.timezone, [(r.timezone, r.share) for r in tenant.regions], EventSchedule(tenant.events)
    )
    return Output(frame, metadata={"rows": len(frame), "columns": len(frame.columns)})


@asset(partitions_def=tenant_partitions, group_name=GROUP)
def forecast_candidates(
    context: AssetExecutionContext,
    config: RetrainConfig,
    tenant_config: TenantConfig,
    mlflow_tracking: MLflowResource,
    features: pd.DataFrame,
) -> Output[dict]:
    """Per forecast metric: every candidate backtested against seasonal naive; the best registered
    as ``challenger``. A metric whose fingerprint matches its champion's is not refitted (says so); one
    whose window alone moved warm-starts the champion's kind (``warm_start``: from which version, what it saved)."""
    tenant = tenant_config
    trained = train_forecasters(tenant, features, mlflow_tracking.tracker(), _window_tags(features, tenant.source.type),
                                force=config.force)
    for metric, t in trained.items():
        if t.skipped:
            context.log.info(f"{tenant.id} {metric}: {t.fit_note}")
    table = "| metric | winner | MASE | baseline MASE | version | fit |\n|---|---|---|---|---|---|\n" + "\n".join(
        f"| {m} | {t.winner} | {t.scores[t.winner]['mase']:.3f} | {t.scores['seasonal_naive']['mase']:.3f} "
        f"| {t.version.version} | {t.fit_note} |"
        for m, t in trained.items()
    )
    skipped = {m: t.fit_note for m, t in trained.items() if t.skipped}
    warm = {m: t.warm_start for m, t in trained.items() if t.warm_start}
    return Output(trained, metadata={"backtest": MetadataValue.md(table), "metrics": len(trained),
                                     "skipped": len(skipped), "skipped_metrics": MetadataValue.json(skipped),
                                     "warm_started": len(warm), "warm_start": MetadataValue.json(warm)})


@asset(partitions_def=tenant_partitions, group_name=GROUP)
def anomaly_detector(
    context: AssetExecutionContext,
    config: RetrainConfig,
    tenant_config: TenantConfig,
    mlflow_tracking: MLflowResource,
    metrics_source: MetricsSourceResource,
    features: pd.DataFrame,
    operator_verdicts: OperatorVerdictsResource,
) -> Output[DetectorTraining]:
    """The causal detector over the tenant's watched metrics, its thresholds calibrated with the
    operators' verdicts on its episodes, registered as ``challenger``; not refitted when its
    fingerprint (verdicts included) matches the champion's (says so)."""
    tenant = tenant_config
    source = metrics_source.source(tenant)
    truth = source.anomalies(features.index[0], features.index[-1]) if hasattr(source, "anomalies") else None
    trained = train_detector(tenant, features, mlflow_tracking.tracker(), _window_tags(features, tenant.source.type),
                             truth, operator_verdicts.labelled_episodes(tenant.id), force=config.force)
    if trained.skipped:
        context.log.info(f"{tenant.id} anomaly detector: {trained.fit_note}")
    stats = {k: float(v) for k, v in trained.stats.items()}
    return Output(trained, metadata={"version": trained.version.version, "fit": trained.fit_note, **stats})


@asset(partitions_def=tenant_partitions, group_name=GROUP, deps=[forecast_candidates])
def capacity_model(
    tenant_config: TenantConfig,
    mlflow_tracking: MLflowResource,
    metrics_source: MetricsSourceResource,
    validated_metrics: pd.DataFrame,
) -> Output[dict | None]:
    """The capacity planner behind /recommend (scaling targets, capacity per replica and start-up
    time learned from the fleet's series where present, behaviour, learned recurring peaks), registered as ``challenger`` when
    it changed; ``champions`` promotes it."""
    tenant = tenant_config
    planner = train_capacity_planner(tenant, mlflow_tracking.tracker(), _window_tags(validated_metrics, tenant.source.type),
                                     validated_metrics, metrics_source.source(tenant))
    return Output(planner, metadata={"services": len(tenant.scaling), "version": planner["version"] if planner else "-",
                                     "fleet": planner["fleet"] if planner else "-",
                                     "learned_peaks": planner["peaks"] if planner else "-"})


@asset(partitions_def=tenant_partitions, group_name=GROUP)
def champions(
    tenant_config: TenantConfig,
    mlflow_tracking: MLflowResource,
    forecast_candidates: dict,
    anomaly_detector: DetectorTraining,
    capacity_model: dict | None,
) -> Output[list[dict]]:
    """Promotion: a challenger becomes ``champion`` only when it beats the champion and the baseline."""
    tenant = tenant_config
    tracker = mlflow_tracking.tracker()
    records = [r.to_dict() for r in promote_forecasters(tenant, forecast_candidates, tracker)]
    records.append(promote_detector(tenant, anomaly_detector, tracker).to_dict())
    if capacity_model:
        records.append(promote_capacity_planner(tenant, capacity_model, tracker).to_dict())
    table = "| model | challenger | champion before | promoted | reason |\n|---|---|---|---|---|\n" + "\n".join(
        f"| {r['name']} | {r['challenger']} | {r['champion_before'] or '-'} | {r['promoted']} | {r['reason']} |" for r in records
    )
    return Output(records, metadata={"decisions": MetadataValue.md(table), "promoted": sum(r["promoted"] for r in records)})


@asset(partitions_def=tenant_partitions, group_name=GROUP)
def tenant_bento(
    tenant_config: TenantConfig,
    mlflow_tracking: MLflowResource,
    packager: BentoPackagerResource,
    champions: list[dict],
) -> Output[dict]:
    """The tenant's champions packed as the BentoML model ``helios-<tenant>`` and, optionally, a Bento."""
    from serving.packaging import build_bento, champion_pins, save_bento_model

    tenant = tenant_config
    tracker = mlflow_tracking.tracker()
    model_tag = save_bento_model(tenant, tracker)
    bento_tag = build_bento(tenant.id, model_tag) if packager.build_bento else None
    served = sorted(p["name"] for p in champion_pins(tenant, tracker).values())
    return Output(
        {"model": model_tag, "bento": bento_tag, "served": served},
        metadata={"bento_model": model_tag, "bento": bento_tag or "(not built)", "served": ", ".join(served)},
    )


ALL_ASSETS = [
    tenant_config,
    raw_metrics,
    validated_metrics,
    features,
    forecast_candidates,
    anomaly_detector,
    capacity_model,
    champions,
    tenant_bento,
]
