"""Helpers the networked sources share: secrets from the environment, the tenant's grid in chunks."""

from __future__ import annotations

import os

import pandas as pd

from helios_pipelines.core.sources.base import SourceError


def secret_from_env(tenant_id: str, env_var: str, purpose: str) -> str:
    """The value of ``env_var``; a clear error when it is unset, since the YAML only names it."""
    value = os.environ.get(env_var, "")
    if not value:
        raise SourceError(f"tenant '{tenant_id}': environment variable {env_var} ({purpose}) is not set")
    return value


def grid_chunks(index: pd.DatetimeIndex, max_points: int) -> list[pd.DatetimeIndex]:
    """``index`` cut into runs of at most ``max_points`` grid points.

    Each chunk starts one step after the previous one ends, so the stitched result has every point
    exactly once.
    """
    return [index[i : i + max_points] for i in range(0, len(index), max_points)]


def metric_context(tenant_id: str, metric: str, query: str | None = None) -> str:
    """How an error names what failed: tenant, logical metric and the query sent."""
    where = f"tenant '{tenant_id}', metric '{metric}'"
    return f"{where} (query {query!r})" if query else where
