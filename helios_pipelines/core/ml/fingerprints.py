"""Fingerprints of a fit (#20.2): hashes of the data window it saw, of the configuration it read and
of the code version, stored on the version as ``VersionTags.fingerprint``. A retrain whose fingerprint
equals the champion's has nothing new to learn: ``core.ml.training`` skips its fit and keeps the champion;
one whose data window alone moved may continue the champion's fit (``models.warm_start``).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from helios_pipelines.core.ml.tracking import CHAMPION, RegisteredVersion, Tracker
from helios_pipelines.core.tenants import TenantConfig

# Distributions whose version can change what a fit produces (and xgboost's, whose distribution may be
# xgboost or xgboost-cpu: read from the module the models already imported). Read from their metadata:
# importing prophet here would print its plotly notice on `helios run`'s terminal.
FIT_DISTRIBUTIONS = ("numpy", "pandas", "scikit-learn", "prophet", "cmdstanpy")


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


@functools.cache
def code_version() -> str:
    """A hash of the source that decides what a fit produces (core.ml.training and warm_retrain, the
    backtest, features, events and every model module) and of the fitting libraries' versions."""
    from helios_pipelines.core.ml import evaluation, events, features, models, training, warm_retrain

    files = [Path(m.__file__) for m in (training, warm_retrain, evaluation, events, features)]
    for folder in models.__path__:
        files += sorted(Path(folder).rglob("*.py"))
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    import xgboost

    libraries = {name: importlib.metadata.version(name) for name in FIT_DISTRIBUTIONS}
    libraries["xgboost"] = xgboost.__version__
    digest.update(json.dumps(libraries, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def data_hash(data: pd.Series | pd.DataFrame) -> str:
    """The values, timestamps and (for a frame) column names a fit saw."""
    names = json.dumps([str(data.name)] if isinstance(data, pd.Series) else [str(c) for c in data.columns])
    rows = pd.util.hash_pandas_object(data, index=True).to_numpy().tobytes()
    return _digest(names.encode() + rows)


def fingerprint(data: pd.Series | pd.DataFrame, config: dict) -> dict[str, str]:
    return {
        "data": data_hash(data),
        "config": _digest(json.dumps(config, sort_keys=True, default=str).encode()),
        "code": code_version(),
    }


def _events_for(tenant: TenantConfig, metrics: set[str]) -> list:
    return [e for e in tenant.events if not e.metrics or metrics & set(e.metrics)]


def forecaster_config(tenant: TenantConfig, metric: str, kinds: tuple[str, ...]) -> dict:
    """The part of the tenant's configuration a metric's training reads (``training.forecaster_for``, the backtest of ``kinds``)."""
    return {
        "metric": tenant.metrics[metric].model_dump(mode="json"),
        "step": tenant.step,
        "timezone": tenant.timezone,
        "regions": [r.model_dump(mode="json") for r in tenant.regions],
        "events": [e.model_dump(mode="json") for e in _events_for(tenant, {metric})],
        "seed": tenant.training.seed,
        "folds": tenant.training.backtest_folds,
        "candidates": list(kinds),
        "drivers": tenant.drivers_of(metric) if tenant.training.forecast_from_drivers else [],
    }


def detector_config(tenant: TenantConfig, kind: str) -> dict:
    """The part of the tenant's configuration the detector's training reads (``training.tenant_detector``)."""
    return {
        "metrics": {m: tenant.metrics[m].model_dump(mode="json") for m in sorted(tenant.anomaly_metrics)},
        "step": tenant.step,
        "sensitivity": tenant.alerts.anomaly.model_dump(mode="json"),
        "z_threshold": tenant.alerts.thresholds.anomaly_alert,
        "drivers": sorted({s.metric for s in tenant.scaling}),
        "pressure": sorted({s.utilization_metric for s in tenant.scaling if s.utilization_metric}),
        "events": [e.model_dump(mode="json") for e in tenant.events],
        "seed": tenant.training.seed,
        "kind": kind,
    }


@dataclass(frozen=True)
class ChampionMatch:
    """A retrain's fingerprint against its champion's: the champion (None when there is none to compare
    with), the parts that differ, and what was compared, in words."""

    champion: RegisteredVersion | None
    changed: tuple[str, ...]
    why: str

    @property
    def unchanged(self) -> bool:
        """Nothing new to learn: the fit is skipped."""
        return self.champion is not None and not self.changed

    @property
    def window_only(self) -> bool:
        """Only the data window moved (configuration and code as the champion's): a warm start may apply."""
        return self.champion is not None and self.changed == ("data",)


def against_champion(tracker: Tracker, name: str, fingerprint: dict) -> ChampionMatch:
    champion = tracker.version_by_alias(name, CHAMPION)
    if champion is None:
        return ChampionMatch(None, (), "no champion yet")
    theirs = champion.tags.fingerprint
    if theirs is None:
        return ChampionMatch(None, (), f"champion v{champion.version} has no fingerprint")
    changed = tuple(part for part in ("data", "config", "code") if theirs.get(part) != fingerprint[part])
    if changed:
        return ChampionMatch(champion, changed, f"{' and '.join(changed)} changed since champion v{champion.version}")
    return ChampionMatch(champion, (), f"fingerprint matches champion v{champion.version} (data {fingerprint['data']}, "
                                       f"config {fingerprint['config']}, code {fingerprint['code']}): fit skipped")
