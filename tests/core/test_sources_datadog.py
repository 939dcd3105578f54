"""The Datadog source against a local server speaking the documented v1 ``GET /api/v1/query``:
``from``/``to`` in seconds, ``series[].pointlist`` of ``[ms, value|null]``."""

from __future__ import annotations

import time
from itertools import pairwise

import numpy as np
import pandas as pd
import pytest

from helios_pipelines.core.sources import make_source
from helios_pipelines.core.sources.base import SourceError
from helios_pipelines.core.sources.datadog import MAX_POINTS_PER_REQUEST, Datadog
from helios_pipelines.core.tenants import TenantConfig
from tests.harness.scripted_http import Reply, ScriptedServer

START = pd.Timestamp("2025-03-03", tz="UTC")
END = pd.Timestamp("2025-03-06", tz="UTC")  # 3 days at 1 minute: 4,320 points, 3 requests per metric


@pytest.fixture(autouse=True)
def keys(monkeypatch):
    monkeypatch.setenv("DD_API_KEY", "api-123")
    monkeypatch.setenv("DD_APP_KEY", "app-456")


def tenant(url: str | None, metrics: dict | None = None, **source) -> TenantConfig:
    return TenantConfig.model_validate(
        {
            "id": "ddtest",
            "name": "Datadog test",
            "step": "1min",
            "source": {"type": "datadog", **({"api_url": url} if url else {}), **source},
            "metrics": metrics
            or {
                "players": {"series": "game_players", "forecast": {"horizons": [60]}},
                "requests": {"series": "http_requests", "kind": "counter"},
            },
        }
    )


def value_at(seconds: int) -> float | None:
    """What the fake Datadog holds: minute number mod 97, nothing every 50th minute."""
    minute = seconds // 60
    return None if minute % 50 == 0 else float(minute % 97)


def query_api(request) -> Reply:
    start, end = int(request.params["from"]), int(request.params["to"])
    points = [[s * 1000, value_at(s)] for s in range(start, end + 1, 60)]
    series = [{"metric": "game_players", "scope": "*", "pointlist": points, "interval": 60}]
    return Reply(
        body={"status": "ok", "res_type": "time_series", "series": series, "query": request.params["query"]}
    )


def test_chunks_under_datadogs_rollup_limit_with_keys_from_the_environment():
    with ScriptedServer(query_api) as server:
        frame = Datadog(tenant(server.url)).fetch(START, END, ["players"])

    assert [r.path for r in server.requests] == ["/api/v1/query"] * 3
    for request in server.requests:
        assert request.headers["dd-api-key"] == "api-123"
        assert request.headers["dd-application-key"] == "app-456"
        assert request.params["query"] == "avg:game_players{*}.rollup(avg, 60)"
        assert (int(request.params["to"]) - int(request.params["from"])) // 60 + 1 <= MAX_POINTS_PER_REQUEST
    assert int(server.requests[0].params["from"]) == START.timestamp()
    assert int(server.requests[-1].params["to"]) == (END - pd.Timedelta("1min")).timestamp()
    for previous, following in pairwise(server.requests):
        assert int(following.params["from"]) == int(previous.params["to"]) + 60

    expected = [value_at(int(t.timestamp())) for t in frame.index]
    np.testing.assert_array_equal(frame["players"].to_numpy(), np.array(expected, dtype=float))  # null -> NaN
    assert len(frame) == 4320


def test_counter_query_asks_datadog_for_a_per_second_rate():
    with ScriptedServer(query_api) as server:
        Datadog(tenant(server.url)).fetch(START, START + pd.Timedelta("1h"), ["requests"])
    assert server.requests[0].params["query"] == "sum:http_requests{*}.as_rate().rollup(avg, 60)"


def test_429_waits_for_x_ratelimit_reset():
    replies = iter(
        [Reply(status=429, body={"errors": ["Rate limit exceeded"]}, headers={"X-RateLimit-Reset": "2"})]
    )

    def respond(request):
        return next(replies, None) or query_api(request)

    with ScriptedServer(respond) as server:
        began = time.monotonic()
        frame = Datadog(tenant(server.url)).fetch(START, START + pd.Timedelta("1h"), ["players"])
        waited = time.monotonic() - began
    assert len(server.requests) == 2
    assert waited >= 1.9
    assert frame["players"].notna().sum() > 50


def test_5xx_is_retried_and_gives_up_with_a_clear_error():
    with ScriptedServer(lambda request: Reply(status=503, body={"errors": ["unavailable"]})) as server:
        with pytest.raises(
            SourceError, match=r"tenant 'ddtest', metric 'players'.*HTTP 503.*still after 2 attempts"
        ):
            Datadog(tenant(server.url, retries=1)).fetch(START, START + pd.Timedelta("1h"), ["players"])
    assert len(server.requests) == 2
    with pytest.raises(SourceError, match=r"Datadog unreachable after 2 attempts"):
        Datadog(tenant("http://127.0.0.1:9", retries=1)).fetch(START, START + pd.Timedelta("1h"), ["players"])


def test_bad_keys_are_not_retried_and_say_what_to_fix():
    with ScriptedServer(lambda request: Reply(status=403, body={"errors": ["Forbidden"]})) as server:
        with pytest.raises(SourceError, match=r"HTTP 403.*check DD_API_KEY and DD_APP_KEY"):
            Datadog(tenant(server.url)).fetch(START, START + pd.Timedelta("1h"), ["players"])
    assert len(server.requests) == 1


def test_several_series_and_missing_metric_are_clear_errors():
    def two_series(request):
        reply = query_api(request)
        reply.body["series"] *= 2
        return reply

    with ScriptedServer(two_series) as server:
        with pytest.raises(SourceError, match=r"metric 'players'.*returned 2 series where one is expected"):
            Datadog(tenant(server.url)).fetch(START, START + pd.Timedelta("1h"), ["players"])
    empty = {"status": "ok", "series": []}
    with ScriptedServer(lambda request: Reply(body=empty)) as server:
        with pytest.raises(SourceError, match=r"metric 'players'.*no data"):
            Datadog(tenant(server.url)).fetch(START, START + pd.Timedelta("1h"), ["players"])


def test_missing_key_is_named(monkeypatch):
    monkeypatch.delenv("DD_APP_KEY")
    with pytest.raises(SourceError, match=r"DD_APP_KEY \(Datadog application key\) is not set"):
        make_source(tenant("http://127.0.0.1:9"))


def test_site_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("DD_SITE", "datadoghq.eu")
    source = make_source(tenant(None))
    assert source._api.api_client.configuration.host == "https://api.datadoghq.eu"


def test_a_written_query_runs_as_written():
    # Datadog names carry dots, which a series name may not: such metrics are reached through query.
    metrics = {
        "cpu": {
            "series": "cpu",
            "query": "avg:system.cpu.user{env:prod}.rollup(avg, 60)",
            "forecast": {"horizons": [60]},
        }
    }
    with ScriptedServer(query_api) as server:
        Datadog(tenant(server.url, metrics)).fetch(START, START + pd.Timedelta("1h"))
    assert server.requests[0].params["query"] == "avg:system.cpu.user{env:prod}.rollup(avg, 60)"
