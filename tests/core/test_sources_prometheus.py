"""The Prometheus source against a real Prometheus (backfilled from the simulator) and, for auth and
retries, against a scripted local server."""

from __future__ import annotations

from itertools import pairwise

import httpx
import numpy as np
import pandas as pd
import pytest
import tenacity

from helios_pipelines.core.sources import make_source, prometheus
from helios_pipelines.core.sources.base import SourceError, counter_to_rate, grid
from helios_pipelines.core.sources.check import check_source, format_report
from helios_pipelines.core.sources.prometheus import MAX_POINTS_PER_QUERY, Prometheus
from helios_pipelines.core.tenants import TenantConfig, parse_tenant_file
from tests.harness.conftest_prometheus import prometheus_binaries, simulated_prometheus  # noqa: F401
from tests.harness.prometheus_harness import REPO, simulated_history
from tests.harness.scripted_http import Reply, ScriptedServer

# Tests against the real server start a Prometheus process (promtool backfill, then serve): the full tier.
REAL_PROMETHEUS = pytest.mark.slow
SEED = 7
START = pd.Timestamp("2025-03-03", tz="UTC")
END = pd.Timestamp("2025-03-11", tz="UTC")  # 8 days at 1 minute: 11,520 points, more than one query
METRICS = {
    "players": {"series": "game_server_active_players", "forecast": {"horizons": [60]}},
    "requests": {"series": "http_requests_total", "kind": "counter"},
    "latency": {"series": "game_server_latency_ms"},
}


def tenant(url: str | None, metrics: dict | None = None, **source) -> TenantConfig:
    return TenantConfig.model_validate(
        {
            "id": "promtest",
            "name": "Prometheus test",
            "step": "1min",
            "source": {"type": "prometheus", **({"url": url} if url else {}), **source},
            "metrics": metrics or METRICS,
        }
    )


class CountingTransport(httpx.HTTPTransport):
    def __init__(self):
        super().__init__()
        self.requests: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return super().handle_request(request)


@pytest.fixture(scope="module")
def server_url(simulated_prometheus) -> str:  # noqa: F811
    return simulated_prometheus(tenant("http://unused"), START, END, seed=SEED)


@pytest.fixture(scope="module")
def history() -> pd.DataFrame:
    return simulated_history(tenant("http://unused"), START, END, SEED)


# ---- against the real server --------------------------------------------------------------------


@REAL_PROMETHEUS
def test_long_window_is_fetched_in_chunks_and_stitched_exactly(server_url, history):
    transport = CountingTransport()
    source = Prometheus(tenant(server_url), transport=transport)
    frame = source.fetch(START, END, ["players"])

    ranges = [dict(r.url.params) for r in transport.requests if r.url.path == "/api/v1/query_range"]
    assert len(ranges) == -(-len(history) // MAX_POINTS_PER_QUERY) >= 2
    for previous, following in pairwise(ranges):
        assert float(following["start"]) == float(previous["end"]) + 60
    assert float(ranges[0]["start"]) == START.timestamp()
    assert float(ranges[-1]["end"]) == (END - pd.Timedelta("1min")).timestamp()

    assert frame.index.equals(grid(START, END, pd.Timedelta("1min")))
    expected = history["game_server_active_players"].to_numpy()
    np.testing.assert_array_equal(frame["players"].to_numpy(), expected)  # NaN where the simulator has gaps


@REAL_PROMETHEUS
def test_gap_stays_nan_instead_of_repeating_the_last_sample(server_url, history):
    gaps = history.index[history["game_server_latency_ms"].isna()]
    assert len(gaps) > 0, "the simulated window should hold scrape gaps"
    frame = Prometheus(tenant(server_url)).fetch(START, END, ["latency"])
    assert frame.loc[gaps, "latency"].isna().all()
    around = history.index[history["game_server_latency_ms"].notna()]
    assert frame.loc[around, "latency"].notna().all()


@REAL_PROMETHEUS
def test_counter_rate_with_resets_matches_the_simulators_rate(server_url, history):
    counter = history["http_requests_total"]
    assert (counter.diff() < 0).sum() >= 7, "one reset a day should be in the window"
    source = Prometheus(tenant(server_url))
    assert source.promql(source.tenant.metrics["requests"]) == "rate(http_requests_total[240s])"

    fetched = source.fetch(START, END, ["requests"])["requests"]
    # rate() over 4 one-minute steps is the mean of the simulator's four per-step rates.
    expected = counter_to_rate(counter, pd.Timedelta("1min")).rolling(4).mean()
    both = expected.notna()
    assert both.sum() > 0.95 * len(expected)
    np.testing.assert_allclose(fetched[both].to_numpy(), expected[both].to_numpy(), rtol=1e-9)
    assert (fetched.dropna() >= 0).all()  # a reset never shows as a negative rate


@REAL_PROMETHEUS
def test_missing_metric_is_a_clear_error(server_url):
    metrics = {"players": {"series": "game_server_players_typo", "forecast": {"horizons": [60]}}}
    with pytest.raises(
        SourceError, match=r"tenant 'promtest', metric 'players'.*game_server_players_typo.*no data"
    ):
        Prometheus(tenant(server_url, metrics)).fetch(START, START + pd.Timedelta("1h"))


@REAL_PROMETHEUS
def test_query_returning_several_series_is_a_clear_error(server_url):
    metrics = {
        "players": {
            "series": "game_server_active_players",
            "query": '{__name__=~"game_server_.*"}',
            "forecast": {"horizons": [60]},
        }
    }
    with pytest.raises(SourceError, match=r"metric 'players'.*returned 2 series where one is expected.*sum"):
        Prometheus(tenant(server_url, metrics)).fetch(START, START + pd.Timedelta("1h"))


@REAL_PROMETHEUS
def test_a_written_query_runs_as_written(server_url, history):
    metrics = {
        "players": {
            "series": "game_server_active_players",
            "query": "sum(game_server_active_players) * 2",
            "forecast": {"horizons": [60]},
        }
    }
    frame = Prometheus(tenant(server_url, metrics)).fetch(START, START + pd.Timedelta("2h"))
    expected = history["game_server_active_players"].iloc[:120] * 2
    present = expected.notna()
    np.testing.assert_allclose(frame["players"][present].to_numpy(), expected[present].to_numpy())


@REAL_PROMETHEUS
def test_list_metrics_and_current_values(server_url):
    metrics = {**METRICS, "constant": {"series": "constant", "query": "vector(42)"}}
    source = Prometheus(tenant(server_url, metrics))
    assert source.list_metrics() == [
        "game_server_active_players",
        "game_server_latency_ms",
        "http_requests_total",
    ]
    current = source.current_values(["constant", "players"])
    assert current["constant"] == 42.0
    assert np.isnan(current["players"])  # the backfilled history ended long before now


@REAL_PROMETHEUS
def test_url_from_environment_when_config_has_none(server_url, monkeypatch):
    monkeypatch.setenv("PROMETHEUS_URL", server_url)
    source = make_source(tenant(None))
    assert isinstance(source, Prometheus) and source.url == server_url
    monkeypatch.delenv("PROMETHEUS_URL")
    with pytest.raises(SourceError, match="PROMETHEUS_URL"):
        make_source(tenant(None))


def test_wrong_url_fails_after_retries(monkeypatch):
    monkeypatch.setattr(prometheus, "BACKOFF_SECONDS", 0.01)
    transport = CountingTransport()
    source = Prometheus(tenant("http://127.0.0.1:9", retries=2), transport=transport)  # port 9: discard
    with pytest.raises(
        SourceError, match=r"tenant 'promtest', metric 'players'.*gave up after 3 attempts.*ConnectError"
    ):
        source.fetch(START, START + pd.Timedelta("1h"))
    assert len(transport.requests) == 3


# ---- against a scripted server: auth, retries, failures mid-fetch -----------------------------


def matrix(request, value: float = 1.0) -> Reply:
    start, end = float(request.params["start"]), float(request.params["end"])
    values = [[t, str(value)] for t in np.arange(start, end + 1, 60)]
    return Reply(
        body={
            "status": "success",
            "data": {"resultType": "matrix", "result": [{"metric": {}, "values": values}]},
        }
    )


def test_bearer_token_from_environment_is_sent(monkeypatch):
    monkeypatch.setenv("HELIOS_TEST_PROM_TOKEN", "s3cret")
    with ScriptedServer(matrix) as server:
        Prometheus(tenant(server.url, bearer_token_env="HELIOS_TEST_PROM_TOKEN")).fetch(
            START, START + pd.Timedelta("1h")
        )
    assert {r.headers["authorization"] for r in server.requests} == {"Bearer s3cret"}


def test_basic_auth_is_sent(monkeypatch):
    monkeypatch.setenv("HELIOS_TEST_PROM_PASSWORD", "pw")
    with ScriptedServer(matrix) as server:
        source = Prometheus(
            tenant(server.url, basic_auth_user="helios", basic_auth_password_env="HELIOS_TEST_PROM_PASSWORD")
        )
        source.fetch(START, START + pd.Timedelta("1h"))
    assert server.requests[0].headers["authorization"] == "Basic aGVsaW9zOnB3"  # helios:pw


def test_unset_secret_is_named():
    with pytest.raises(SourceError, match="HELIOS_TEST_UNSET_TOKEN"):
        Prometheus(tenant("http://127.0.0.1:9", bearer_token_env="HELIOS_TEST_UNSET_TOKEN"))


def test_5xx_and_timeouts_are_retried(monkeypatch):
    monkeypatch.setattr(prometheus, "BACKOFF_SECONDS", 0.01)
    replies = iter(
        [
            Reply(status=503, body={"status": "error", "error": "overloaded"}),
            Reply(delay_seconds=1.5, body={}),
            Reply(status=502, body=b"bad gateway"),
        ]
    )

    def respond(request):
        return next(replies, None) or matrix(request, 5.0)

    with ScriptedServer(respond) as server:
        source = Prometheus(tenant(server.url, timeout_seconds=0.5, retries=3))
        frame = source.fetch(START, START + pd.Timedelta("1h"), ["players"])
    assert len(server.requests) == 4
    assert (frame["players"] == 5.0).all()


def test_a_429_waits_as_long_as_retry_after_says_and_backoff_doubles(monkeypatch):
    """The waits between attempts: the server's Retry-After (capped at 60 s) when it gives one, else
    BACKOFF_SECONDS doubling: 7 s asked, then 0.25 x 2 and 0.25 x 4 for two 503s."""
    monkeypatch.setattr(prometheus, "BACKOFF_SECONDS", 0.25)
    waits = []
    monkeypatch.setattr(tenacity.nap.time, "sleep", waits.append)
    replies = iter([Reply(status=429, body=b"slow down", headers={"Retry-After": "7"}),
                    Reply(status=503, body=b"busy"), Reply(status=503, body=b"busy")])

    with ScriptedServer(lambda request: next(replies, None) or Reply(body={"status": "success", "data": ["up"]})) as server:
        assert Prometheus(tenant(server.url, retries=3)).list_metrics() == ["up"]
    assert [w for w in waits if w] == [7.0, 0.5, 1.0]  # (zero-second sleeps are the HTTP stack's own)
    assert len(server.requests) == 4


def test_4xx_is_not_retried_and_explains(monkeypatch):
    monkeypatch.setattr(prometheus, "BACKOFF_SECONDS", 0.01)
    error = {
        "status": "error",
        "errorType": "bad_data",
        "error": "1:5: parse error: unclosed left parenthesis",
    }
    with ScriptedServer(lambda request: Reply(status=400, body=error)) as server:
        with pytest.raises(SourceError, match=r"metric 'players'.*HTTP 400.*unclosed left parenthesis"):
            Prometheus(tenant(server.url, retries=3)).fetch(START, START + pd.Timedelta("1h"))
    assert len(server.requests) == 1


def test_bad_credentials_say_what_to_fix():
    with ScriptedServer(lambda request: Reply(status=401, body=b"Unauthorized")) as server:
        with pytest.raises(SourceError, match=r"HTTP 401.*check the credentials"):
            Prometheus(tenant(server.url)).list_metrics()
    assert len(server.requests) == 1


def test_failure_mid_fetch_raises_instead_of_returning_part(monkeypatch):
    monkeypatch.setattr(prometheus, "BACKOFF_SECONDS", 0.01)

    def respond(request):
        if "http_requests_total" in request.params["query"]:
            return Reply(status=500, body={"status": "error", "error": "storage failure"})
        return matrix(request)

    with ScriptedServer(respond) as server:
        with pytest.raises(
            SourceError, match=r"metric 'requests'.*gave up after 2 attempts.*storage failure"
        ):
            Prometheus(tenant(server.url, retries=1)).fetch(START, START + pd.Timedelta("1h"))
    assert [r.params["query"].split("(")[0] for r in server.requests] == ["last_over_time", "rate", "rate"]


# ---- helios sources check ---------------------------------------------------------------------


@REAL_PROMETHEUS
def test_check_reports_existing_metrics_coverage_and_gaps(server_url, history):
    metrics = {**METRICS, "typo": {"series": "game_server_queue_lenght"}}
    report = check_source(tenant(server_url, metrics), START, START + pd.Timedelta("1D"))
    rows = {m.name: m for m in report.metrics}
    assert report.error is None and not report.ok
    day = history["game_server_active_players"].iloc[:1440]
    assert rows["players"].listed is True and rows["players"].ok
    assert rows["players"].coverage == pytest.approx(day.notna().mean())
    assert sum(g.points for g in rows["players"].gaps) == day.isna().sum() > 0
    assert rows["typo"].listed is False and "no data" in rows["typo"].error
    table = format_report(report)
    assert "typo" in table and "ERROR" in table and "3 of 4 metrics ok" in table


def test_check_explains_an_unreachable_server(monkeypatch):
    monkeypatch.setattr(prometheus, "BACKOFF_SECONDS", 0.01)
    report = check_source(tenant("http://127.0.0.1:9"), START, START + pd.Timedelta("1h"))
    assert not report.ok and "ConnectError" in report.error and report.metrics == []
    assert "FAILED" in format_report(report)


def test_example_tenant_config_is_valid(monkeypatch):
    monkeypatch.setenv("ARENA_PROMETHEUS_TOKEN", "token")
    example = parse_tenant_file(REPO / "configs" / "tenants" / "_examples" / "prometheus-arena.yaml")
    source = make_source(example)
    assert source.promql(example.metrics["http_requests"]) == "rate(http_requests_total[120s])"
    assert source.promql(example.metrics["concurrent_users"]) == "sum(game_active_sessions)"
