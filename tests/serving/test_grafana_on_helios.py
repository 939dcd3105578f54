"""Grafana on Helios, end to end over real processes: a `bentoml serve` of the arena tenant answers
Prometheus' HTTP API, a real Prometheus holds the customer's raw series (the simulator's history,
backfilled), and another real Prometheus scrapes Helios' /metrics.

Every query of the rendered dashboard and of the guide's dashboard section is sent the way Grafana
sends it (range queries unless the target says instant) to the data source it names."""

import json
import re
import time

import httpx
import pandas as pd
import pytest
import yaml

from helios_pipelines.commands.deploy import DeploySettings, render
from helios_pipelines.core.ops.scorecard_store import all_stored
from helios_pipelines.core.ops.store import Store
from helios_pipelines.core.sources import make_source
from helios_pipelines.core.tenants import TenantConfig
from serving.answers.series import ANOMALY_SCORE
from tests.conftest import FIXTURE_TENANTS, SHARED
from tests.harness.prometheus_harness import PrometheusServer
from tests.harness.serve_harness import bentoml_serve

IMAGE = DeploySettings(image_tag="test")  # the rendered files read here do not name the image

GUIDE = SHARED / "seed" / "helios-integration-guide.md"
# The guide's raw series beside arena's own: the simulator writes any series it has no model for as a
# daily load-following gauge, which is all a "returns data" check needs.
GUIDE_SERIES = {"active_sessions": "game_active_sessions", "server_players": "game_server_players",
                "server_capacity": "game_server_capacity"}
pytestmark = pytest.mark.slow
ARENA = TenantConfig.model_validate(yaml.safe_load((FIXTURE_TENANTS / "arena.yaml").read_text()))
FORECAST = 'helios_forecast_value{customer="arena",metric="concurrent_users",horizon="1h"}'


@pytest.fixture(scope="module")
def helios(trained_arena, tmp_path_factory):
    assert trained_arena.success
    with bentoml_serve(tmp_path_factory.mktemp("grafana-serve"), "--arg", "tenants=arena") as client:
        yield client


@pytest.fixture(scope="module")
def customer_prometheus(simulated_prometheus) -> str:
    """The customer's Prometheus: arena's raw series and the guide's, over the last three hours."""
    raw = yaml.safe_load((FIXTURE_TENANTS / "arena.yaml").read_text())
    raw["metrics"] |= {name: {"series": series} for name, series in GUIDE_SERIES.items()}
    tenant = TenantConfig.model_validate(raw)
    end = pd.Timestamp.now(tz="UTC").ceil("5min")
    return simulated_prometheus(tenant, end - pd.Timedelta("3h"), end)


def grafana_query(client: httpx.Client, target: dict, instant: bool) -> dict:
    """The request Grafana's Prometheus data source makes for a panel target over the last hour."""
    end = pd.Timestamp.now(tz="UTC")
    if instant:
        response = client.post("/api/v1/query", data={"query": target["expr"], "time": f"{end.value / 1e9:.3f}"})
    else:
        step = 60
        params = {"query": target["expr"], "start": str((end.value // 10**9 - 3600) // step * step),
                  "end": str(end.value // 10**9 // step * step), "step": str(step)}
        response = client.post("/api/v1/query_range", data=params)
    assert response.status_code == 200, f"{target['expr']}: {response.text}"
    body = response.json()
    assert body["status"] == "success"
    return body["data"]


def finite_points(data: dict) -> list[float]:
    points = [v for r in data["result"] for _, v in (r["values"] if "values" in r else [r["value"]])]
    return [float(v) for v in points if v not in ("NaN", "+Inf", "-Inf")]


def assert_scores_where_the_source_has_data(data: dict, what: str) -> None:
    """Helios' anomaly score of a step is a number exactly where arena's source holds the metric's
    value at that step: the simulator drops short seeded runs of points (scrape gaps, up to 25 minutes
    at arena's step), and a score over a gap is NaN, as Prometheus has no sample there. A run that
    starts inside a gap sees only NaN, which is the answer; otherwise the panel has data."""
    source = make_source(ARENA)
    found = 0
    for series in data["result"]:
        for stamp, value in series["values"]:
            step = pd.Timestamp(stamp, unit="s", tz="UTC").floor(ARENA.step_timedelta)  # the step it scored
            held = source.fetch(step, step + ARENA.step_timedelta)[series["metric"]["metric"]]
            has_data = bool(held.notna().any())
            assert (value not in ("NaN", "+Inf", "-Inf")) == has_data, (what, series["metric"], stamp, value)
            found += has_data
    assert data["result"] and (found or not finite_points(data)), f"{what}: no data"


def test_every_rendered_dashboard_query_returns_data_from_the_data_source_it_names(helios, customer_prometheus):
    store = Store()  # the service's (it migrated it on start)
    scored = bool(all_stored(store, "arena"))
    store.close()
    dashboard = json.loads(render(ARENA, IMAGE)["grafana-dashboard.json"])["dashboard"]
    variables = {v["name"] for v in dashboard["templating"]["list"] if v["type"] == "datasource"}
    assert variables == {"datasource", "prometheus"}
    with httpx.Client(base_url=customer_prometheus, timeout=30) as customer:
        clients = {"${datasource}": helios, "${prometheus}": customer}
        asked = {"${datasource}": 0, "${prometheus}": 0}
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                uid = target.get("datasource", panel["datasource"])["uid"]
                if "helios_event_scorecard" in target["expr"] and not scored:
                    # Scorecards exist once a finished event was scored (`helios events scorecard`):
                    # until then the panel's query is answered, and says there is nothing yet.
                    empty = clients[uid].post("/api/v1/query", data={"query": target["expr"]})
                    assert empty.status_code == 422 and "no series matches" in empty.json()["error"], empty.text
                    continue
                data = grafana_query(clients[uid], target, instant=target.get("instant", False))
                if target["expr"].startswith(ANOMALY_SCORE + "{"):
                    assert_scores_where_the_source_has_data(data, f"{panel['title']} / {target['expr']}")
                else:
                    assert finite_points(data), f"{panel['title']} / {target['expr']} on {uid}: no data"
                asked[uid] += 1
    assert asked["${datasource}"] >= 5 and asked["${prometheus}"] >= 1  # forecasts, bounds, score, replicas; actuals


def guide_dashboard() -> dict:
    if not GUIDE.is_file():
        pytest.skip(f"{GUIDE} is absent (../shared not laid out)")
    section = GUIDE.read_text().split("### Gaming Dashboard (Grafana)", 1)[1]
    return json.loads(re.search(r"```json\n(.*?)```", section, re.S).group(1))["dashboard"]


def test_every_query_of_the_guide_s_dashboard_returns_data(helios, customer_prometheus):
    """The guide's gaming-corp panels, pointed at the arena tenant this test serves (same gaming
    profile): queries of Helios' series go to Helios, the raw ones to the customer's Prometheus."""
    panels = guide_dashboard()["panels"]
    with httpx.Client(base_url=customer_prometheus, timeout=30) as customer:
        for panel in panels:
            for target in panel["targets"]:
                reads_helios = "helios_" in target["expr"]
                expr = target["expr"].replace("customer='gaming-corp'", "customer='arena'")
                data = grafana_query(helios if reads_helios else customer, {"expr": expr}, instant=False)
                if expr.startswith(ANOMALY_SCORE + "{"):
                    assert_scores_where_the_source_has_data(data, f"{panel['title']} / {expr}")
                else:
                    assert finite_points(data), f"{panel['title']} / {expr}: no data"


def test_a_real_prometheus_scraping_helios_reads_the_same_forecast(helios, prometheus_binaries, tmp_path):
    target = str(helios.base_url).removeprefix("http://").rstrip("/")
    tsdb = tmp_path / "tsdb"
    tsdb.mkdir()
    scraper = PrometheusServer(tsdb, scrape=[target], scrape_interval="1s")
    try:
        with httpx.Client(base_url=scraper.url, timeout=30) as prometheus:
            deadline = time.monotonic() + 90
            scraped, settled = [], []
            # The gauges are set just after each step boundary (arena's step: 5 minutes): compare scrapes
            # taken 30 s or more into their step, waiting for some when the run began at a boundary.
            while len(scraped) < 25 or not settled:
                assert time.monotonic() < deadline, f"Prometheus did not scrape Helios' forecast: {scraped}"
                time.sleep(2)
                found = prometheus.get("/api/v1/query", params={"query": FORECAST + "[2m]"}).json()["data"]["result"]
                scraped = found[0]["values"] if found else []
                settled = [(t, v) for t, v in scraped if t % 300 >= 30]
            for stamp, value in settled[-3:]:
                own = helios.get("/api/v1/query", params={"query": FORECAST, "time": str(stamp)})
                [element] = own.json()["data"]["result"]
                assert float(element["value"][1]) == float(value), (stamp, value, element)
                through = prometheus.get("/api/v1/query", params={"query": FORECAST, "time": str(stamp)}).json()
                assert float(through["data"]["result"][0]["value"][1]) == float(value)
    finally:
        scraper.stop()


def test_bad_queries_are_400s_naming_the_problem_on_the_running_service(helios):
    end = time.time()
    rate = helios.get("/api/v1/query_range", params={"query": "rate(game_server_active_players[5m])",
                                                     "start": end - 600, "end": end, "step": 60})
    assert rate.status_code == 400 and "function 'rate'" in rate.json()["error"]
    dense = helios.post("/api/v1/query_range", data={"query": FORECAST, "start": end - 86_400, "end": end, "step": 1})
    assert dense.status_code == 400 and "exceeded maximum resolution of 11,000 points" in dense.json()["error"]
    for bad in ("nan", "0", "1970-01-01T00:00:00Z", "3000-01-01T00:00:00Z"):
        response = helios.get("/api/v1/query", params={"query": FORECAST, "time": bad})
        assert response.status_code == 400 and '"time"' in response.json()["error"], (bad, response.text)
    hostile = helios.get("/api/v1/query", params={"query": '{metric=~"(([a-z_]+)+)+X"}'}, timeout=10)
    assert hostile.status_code == 422 and "no series matches" in hostile.json()["error"]
    assert helios.get("/readyz").status_code == 200
