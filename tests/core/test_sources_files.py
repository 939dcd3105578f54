"""The files source: CSV and Parquet, time units, counters, gaps, off-grid samples, clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helios_pipelines.core.sources import make_source
from helios_pipelines.core.sources.base import SourceError
from helios_pipelines.core.sources.files import MetricFiles
from helios_pipelines.core.tenants import TenantConfig

START = pd.Timestamp("2025-03-03 00:00", tz="UTC")
TIMES = pd.date_range(START, periods=10, freq="1min")


def tenant(path, **source) -> TenantConfig:
    return TenantConfig.model_validate(
        {
            "id": "filetest",
            "name": "Files test",
            "step": "1min",
            "source": {"type": "files", "path": str(path), **source},
            "metrics": {
                "players": {"series": "players", "forecast": {"horizons": [60]}},
                "requests": {"series": "requests_total", "kind": "counter"},
            },
        }
    )


def table() -> pd.DataFrame:
    players = np.arange(10, dtype=float) * 10
    players[4] = np.nan  # a scrape gap
    # 60 requests a minute (1/s), the process restarts after 00:05 and counts from zero again.
    requests = np.array([600, 660, 720, 780, 840, 900, 30, 90, 150, 210], dtype=float)
    return pd.DataFrame({"timestamp": TIMES, "players": players, "requests_total": requests})


@pytest.mark.parametrize(
    "suffix, time_unit, encode",
    [
        (".csv", "iso", lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")),
        (".csv", "s", lambda t: t.asi8 // 10**9),
        (".parquet", "ms", lambda t: t.asi8 // 10**6),
        (".parquet", "iso", lambda t: t),
    ],
)
def test_reads_csv_and_parquet_onto_the_grid(tmp_path, suffix, time_unit, encode):
    frame = table()
    frame["timestamp"] = encode(pd.DatetimeIndex(frame["timestamp"]))
    path = tmp_path / f"metrics{suffix}"
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path, index=False)

    source = make_source(tenant(path, time_unit=time_unit))
    assert isinstance(source, MetricFiles)
    got = source.fetch(START, START + pd.Timedelta("10min"))

    assert got.index.equals(pd.DatetimeIndex(TIMES, name="timestamp"))
    np.testing.assert_array_equal(got["players"].to_numpy(), table()["players"].to_numpy())  # gap stays NaN
    # First point has no predecessor; the reset at 00:06 counts its 30 requests since the restart.
    np.testing.assert_allclose(got["requests"].to_numpy(), [np.nan, 1, 1, 1, 1, 1, 0.5, 1, 1, 1])
    assert source.list_metrics() == ["players", "requests_total"]


def test_off_grid_samples_count_for_the_next_grid_point(tmp_path):
    path = tmp_path / "jitter.csv"
    pd.DataFrame(
        {
            "timestamp": ["2025-03-03T00:00:20Z", "2025-03-03T00:00:50Z", "2025-03-03T00:01:10Z"],
            "players": [1.0, 2.0, 3.0],
            "requests_total": [0, 0, 0],
        }
    ).to_csv(path, index=False)
    got = MetricFiles(tenant(path)).fetch(START, START + pd.Timedelta("3min"))
    np.testing.assert_array_equal(got["players"].to_numpy(), [np.nan, 2.0, 3.0])


def test_current_values_are_the_latest_samples(tmp_path):
    path = tmp_path / "metrics.parquet"
    table().to_parquet(path, index=False)
    assert MetricFiles(tenant(path)).current_values() == {"players": 90.0, "requests": 1.0}


def test_missing_file_column_and_bad_values_are_clear_errors(tmp_path):
    with pytest.raises(SourceError, match=r"tenant 'filetest'.*nope.csv does not exist"):
        MetricFiles(tenant(tmp_path / "nope.csv")).fetch(START, START + pd.Timedelta("10min"))
    with pytest.raises(SourceError, match=r"unknown format"):
        MetricFiles(tenant(tmp_path / "metrics.xlsx")).list_metrics()

    path = tmp_path / "metrics.csv"
    table().drop(columns=["requests_total"]).to_csv(path, index=False)
    with pytest.raises(SourceError, match=r"metric 'requests'.*no column 'requests_total'.*columns: players"):
        MetricFiles(tenant(path)).fetch(START, START + pd.Timedelta("10min"))
    with pytest.raises(SourceError, match=r"no time column 'time'"):
        MetricFiles(tenant(path, time_column="time")).list_metrics()

    broken = table()
    broken["players"] = broken["players"].astype(object)
    broken.loc[2, "players"] = "12 players"
    broken.to_csv(path, index=False)
    with pytest.raises(SourceError, match=r"metric 'players'.*1 non-numeric values, e.g. '12 players'"):
        MetricFiles(tenant(path)).fetch(START, START + pd.Timedelta("10min"))
