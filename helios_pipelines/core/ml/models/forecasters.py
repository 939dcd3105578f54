"""Every forecaster kind the pipeline and the benchmark compare, and the factory that builds them.

Reference methods are what users already have, implemented as their tools compute them: seasonal
naive (a day, a week ago: ``seasonal_naive``), Prometheus' ``predict_linear`` and
``double_exponential_smoothing`` (``prometheus_functions``), Prophet (on the tenant's clock, fitted on
15-minute means: ``prophet_forecaster``) and XGBoost on lags (``xgboost_lags``). ``helios`` is ours
(``helios``). The benchmark's own references are in ``benchmarks/references.py``.

Intervals of the reference methods come from their own errors at each lead time, measured at
origins in the last part of the training data (``point``; Prophet: its errors over the last part).
"""

from __future__ import annotations

from typing import Any

from helios_pipelines.core.ml.models.base import Forecaster
from helios_pipelines.core.ml.models.helios import HeliosForecaster
from helios_pipelines.core.ml.models.prometheus_functions import PredictLinear, PrometheusHolt
from helios_pipelines.core.ml.models.prophet_forecaster import ProphetForecaster
from helios_pipelines.core.ml.models.seasonal_naive import SeasonalNaive, SeasonalNaiveWeekly
from helios_pipelines.core.ml.models.xgboost_lags import XGBoostLags

FORECASTERS: dict[str, type[Forecaster]] = {
    cls.kind: cls
    for cls in (
        SeasonalNaive,
        SeasonalNaiveWeekly,
        PredictLinear,
        PrometheusHolt,
        ProphetForecaster,
        XGBoostLags,
        HeliosForecaster,
    )
}
# Kinds that take the players' regions (their evening share as a known-future input). Helios does not:
# on the forecast suite's simulated tenants it made 5 of 7 series worse (bench/results/forecast.md);
# Prophet does (better on shopfast, neutral on gaming-corp).
REGION_KINDS = frozenset({XGBoostLags.kind, ProphetForecaster.kind})
# Kinds that read the tenant's drivers of the metric (#18.3: other metrics' past, ``base.fit_forecaster``).
DRIVER_KINDS = frozenset({HeliosForecaster.kind})
# Kinds that take the metric's seasonality (its config's seasonality list); the others learn theirs from lags.
SEASONALITY_KINDS = frozenset({ProphetForecaster.kind})


def make_forecaster(kind: str, **kwargs: Any) -> Forecaster:
    """Build a forecaster by kind. ``regions`` (players' time zones) only goes to REGION_KINDS,
    ``seasonality`` to SEASONALITY_KINDS and ``drivers`` to DRIVER_KINDS, dropped for the others: the
    pipeline can pass one set of arguments to all."""
    try:
        cls = FORECASTERS[kind]
    except KeyError:
        raise ValueError(
            f"unknown forecaster kind '{kind}'; known kinds: {', '.join(sorted(FORECASTERS))}"
        ) from None
    if kind not in REGION_KINDS:
        kwargs.pop("regions", None)
    if kind not in SEASONALITY_KINDS:
        kwargs.pop("seasonality", None)
    if kind not in DRIVER_KINDS:
        kwargs.pop("drivers", None)
    return cls(**kwargs)
