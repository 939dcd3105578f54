"""Prometheus' HTTP API routes (serving/prometheus_api.py) in process, over published series whose
values are known by construction: a forecast equal to the step's start in minutes since the epoch.
The real service behind them is exercised in tests/serving/test_grafana_on_helios.py."""

import anyio
import pandas as pd
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from helios_pipelines.core.ops.exposition import Sample
from serving import prometheus_api
from serving.prometheus_api import PrometheusAPI
from serving.published import PublishedSeries

STEP = pd.Timedelta("5min")
FORECAST = 'helios_forecast_value{customer="arena", metric="concurrent_users", horizon="1h"}'


def minutes(step: pd.Timestamp) -> float:
    return step.value / 60e9


class Tenants:
    """What HeliosService.tenant_samples gives a tenant at a time, with every computation counted."""

    def __init__(self):
        self.computed: list[tuple[str, pd.Timestamp]] = []
        self.broken: set[str] = set()

    def __call__(self, now: pd.Timestamp, tenant: str) -> list[Sample]:
        step = now.floor(STEP)
        self.computed.append((tenant, step))
        if tenant in self.broken:
            raise ValueError(f"tenant '{tenant}' has a bad event")
        customer = {"customer": tenant}
        return [
            Sample("helios_forecast_value", customer | {"metric": "concurrent_users", "horizon": "1h"}, minutes(step), "forecast"),
            Sample("helios_forecast_value", customer | {"metric": "concurrent_users", "horizon": "15m"}, minutes(step) - 1),
            Sample("helios_recommendation", customer | {"service": "game-server"}, 7.0, "recommended replicas"),
            Sample("helios_recommendation", customer | {"service": "matchmaker"}, 3.0, "recommended replicas"),
        ]


@pytest.fixture()
def tenants():
    return Tenants()


@pytest.fixture()
def published(tenants):
    published = PublishedSeries(tenants, {"arena": STEP, "duel": STEP})
    now = pd.Timestamp.now(tz="UTC")
    for back in range(13):  # what the publisher thread recorded over the last hour
        for tenant in ("arena", "duel"):
            published.current(tenant, now - back * STEP)
    tenants.computed.clear()
    return published


@pytest.fixture()
def client(published):
    app = FastAPI()
    app.include_router(prometheus_api.router)
    prometheus_api.attach(app, PrometheusAPI(published, lambda: anyio.CapacityLimiter(1)))
    with TestClient(app) as client:
        yield client


def now_seconds() -> float:
    return pd.Timestamp.now(tz="UTC").value / 1e9


def test_grafana_save_and_test_query_is_answered_at_its_own_time(client):
    # Grafana's health check: an instant "1+1" POSTed as a form at time=4 (its range 1 s to 4 s).
    response = client.post("/api/v1/query", data={"query": "1+1", "time": "4"})
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "success", "data": {"resultType": "scalar", "result": [4.0, "2.0"]}}


def test_query_range_answers_a_matrix_of_the_published_steps(client, tenants):
    end = pd.Timestamp.now(tz="UTC").floor("1min")
    start = end - pd.Timedelta("30min")
    response = client.get("/api/v1/query_range", params={"query": FORECAST, "start": start.value / 1e9,
                                                         "end": end.value / 1e9, "step": "60"})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["resultType"] == "matrix"
    [series] = data["result"]
    assert series["metric"] == {"__name__": "helios_forecast_value", "customer": "arena",
                                "metric": "concurrent_users", "horizon": "1h"}
    assert len(series["values"]) == 31  # 30 minutes at 60 s, both ends included
    for stamp, value in series["values"]:
        assert float(value) == minutes(pd.Timestamp(stamp, unit="s", tz="UTC").floor(STEP))
    assert tenants.computed == []  # every step was read from the record, none computed again


def test_a_range_query_reads_aggregations_and_arithmetic_of_every_tenant(client):
    end = pd.Timestamp.now(tz="UTC")
    response = client.post("/api/v1/query_range", data={
        "query": "sum by (customer) (helios_recommendation)", "start": str((end - pd.Timedelta("10min")).value / 1e9),
        "end": str(end.value / 1e9), "step": "5m"})
    result = response.json()["data"]["result"]
    assert [r["metric"] for r in result] == [{"customer": "arena"}, {"customer": "duel"}]
    assert {v for r in result for _, v in r["values"]} == {"10.0"}  # 7 + 3 replicas


def test_steps_before_the_record_have_no_points_and_are_not_computed(client, tenants):
    end = pd.Timestamp.now(tz="UTC")
    response = client.get("/api/v1/query_range", params={"query": FORECAST, "start": (end - pd.Timedelta("3h")).value / 1e9,
                                                         "end": end.value / 1e9, "step": "300"})
    [series] = response.json()["data"]["result"]
    first = pd.Timestamp(series["values"][0][0], unit="s", tz="UTC")
    assert first >= end - 13 * STEP  # only the hour the publisher recorded
    assert all(step >= end.floor(STEP) for _, step in tenants.computed)


def test_too_many_points_is_prometheus_own_400(client):
    end = now_seconds()
    response = client.get("/api/v1/query_range", params={"query": FORECAST, "start": end - 11_001, "end": end, "step": "1"})
    assert response.status_code == 400
    assert response.json() == {"status": "error", "errorType": "bad_data",
                               "error": "exceeded maximum resolution of 11,000 points per timeseries. "
                                        "Try decreasing the query resolution (?step=XX)"}
    exactly = client.get("/api/v1/query_range", params={"query": FORECAST, "start": end - 11_000, "end": end, "step": "1"})
    assert exactly.status_code == 200


@pytest.mark.parametrize(("params", "named"), [
    ({"step": "0"}, "zero or negative query resolution step"),
    ({"step": "-5"}, "zero or negative query resolution step"),
    ({"step": "fast"}, 'invalid parameter "step"'),
    ({"step": "nan"}, 'invalid parameter "step"'),
    ({"step": "1e300"}, 'invalid parameter "step"'),
    ({"step": "1e-300"}, "zero or negative query resolution step"),
    ({"start": "nan"}, 'invalid parameter "start"'),
    ({"end": "1970-01-01T00:00:00Z", "start": "0"}, 'parameter "start" asks for 1970-01-01'),
    ({"start": str(now_seconds()), "end": str(now_seconds() - 60)}, "end timestamp must not be before start time"),
    ({"query": "rate(helios_forecast_value[5m])"}, "function 'rate'"),
])
def test_bad_range_queries_are_400_naming_the_problem(client, tenants, params, named):
    end = now_seconds()
    query = {"query": FORECAST, "start": str(end - 600), "end": str(end), "step": "60"} | params
    response = client.get("/api/v1/query_range", params=query)
    assert response.status_code == 400 and named in response.json()["error"], response.text
    assert tenants.computed == []


@pytest.mark.parametrize(("time", "named"), [
    ("nan", 'invalid parameter "time": cannot parse'),
    ("inf", 'invalid parameter "time": cannot parse'),
    ("0", 'parameter "time" asks for 1970-01-01'),
    ("1970-01-02T00:00:00Z", 'parameter "time" asks for 1970-01-02'),
    ("3000-01-01T00:00:00Z", 'parameter "time" asks for 3000-01-01'),
    ("32503680000", 'parameter "time" asks for 3000-01-01'),
    ("yesterday", 'invalid parameter "time": cannot parse'),
])
def test_an_instant_query_at_an_impossible_time_is_a_400_and_computes_nothing(client, tenants, time, named):
    response = client.get("/api/v1/query", params={"query": FORECAST, "time": time})
    assert response.status_code == 400 and named in response.json()["error"], response.text
    assert tenants.computed == []


def test_a_past_time_reads_what_was_published_then(client, tenants):
    past = pd.Timestamp.now(tz="UTC") - pd.Timedelta("40min")
    response = client.get("/api/v1/query", params={"query": FORECAST, "time": past.isoformat()})
    [element] = response.json()["data"]["result"]
    assert float(element["value"][1]) == minutes(past.floor(STEP)) and tenants.computed == []


def test_a_past_time_before_the_record_says_where_the_record_starts(client, tenants):
    before = pd.Timestamp.now(tz="UTC") - pd.Timedelta("3h")
    response = client.get("/api/v1/query", params={"query": FORECAST, "time": before.isoformat()})
    first = (pd.Timestamp.now(tz="UTC") - 12 * STEP).floor(STEP)  # the fixture's hour: 13 steps
    assert response.status_code == 422
    assert response.json()["error"] == (f"Helios published no series for {before.isoformat()}: its record of "
                                        f"published steps starts at {first.isoformat()}")
    assert tenants.computed == []


def test_keda_selectors_answer_exactly_one_series_or_an_error(client):
    one = client.get("/api/v1/query", params={"query": FORECAST})
    assert one.status_code == 200 and len(one.json()["data"]["result"]) == 1
    several = client.get("/api/v1/query", params={"query": 'helios_forecast_value{customer="arena"}'})
    assert several.status_code == 400 and "2 series match" in several.json()["error"]
    none = client.get("/api/v1/query", params={"query": 'helios_forecast_value{customer="ghost"}'})
    assert none.status_code == 422 and "no series matches" in none.json()["error"]
    empty_sum = client.get("/api/v1/query", params={"query": 'sum(helios_forecast_value{customer="ghost"})'})
    assert empty_sum.status_code == 422  # never an empty success, which KEDA reads as 0
    table = client.post("/api/v1/query", data={"query": 'max by (service) (helios_recommendation{customer="arena"})'})
    assert [(r["metric"]["service"], r["value"][1]) for r in table.json()["data"]["result"]] == [
        ("game-server", "7.0"), ("matchmaker", "3.0")]


def test_one_tenants_failure_leaves_the_others_answers(tenants):
    tenants.broken.add("duel")
    app = FastAPI()
    app.include_router(prometheus_api.router)
    prometheus_api.attach(app, PrometheusAPI(PublishedSeries(tenants, {"arena": STEP, "duel": STEP}),
                                             lambda: anyio.CapacityLimiter(1)))
    with TestClient(app) as client:
        both = client.get("/api/v1/query", params={"query": "sum by (customer) (helios_recommendation)"}).json()
        assert [r["metric"] for r in both["data"]["result"]] == [{"customer": "arena"}]
        assert both["warnings"] == ["tenant 'duel': tenant 'duel' has a bad event"]
        duel = client.get("/api/v1/query", params={"query": 'helios_recommendation{customer="duel"}'})
        assert duel.status_code == 422 and "tenant 'duel' has a bad event" in duel.json()["error"]
        tenants.broken.clear()  # the tenant recovers without a restart
        assert client.get("/api/v1/query", params={"query": 'sum(helios_recommendation{customer="duel"})'}).status_code == 200


def test_the_catastrophic_regex_answers_at_once(client):
    response = client.get("/api/v1/query", params={"query": '{metric=~"(([a-z_]+)+)+X"}'})
    assert response.status_code == 422 and "no series matches" in response.json()["error"]


def test_grafana_metric_browser_endpoints(client):
    labels = client.get("/api/v1/labels").json()
    assert labels == {"status": "success", "data": ["__name__", "customer", "horizon", "metric", "service"]}
    names = client.get("/api/v1/label/__name__/values").json()["data"]
    assert names == ["helios_forecast_value", "helios_recommendation"]
    customers = client.get("/api/v1/label/customer/values", params={"match[]": "helios_recommendation"}).json()["data"]
    assert customers == ["arena", "duel"]
    found = client.post("/api/v1/series", data={"match[]": 'helios_recommendation{customer="duel"}'}).json()["data"]
    assert found == [{"__name__": "helios_recommendation", "customer": "duel", "service": "game-server"},
                     {"__name__": "helios_recommendation", "customer": "duel", "service": "matchmaker"}]
    assert client.get("/api/v1/series").status_code == 400
    assert client.get("/api/v1/series", params={"match[]": "sum(x)"}).status_code == 400
    assert client.get("/api/v1/label/bad-name/values").status_code == 400
    meta = client.get("/api/v1/metadata").json()["data"]
    assert meta["helios_recommendation"] == [{"type": "gauge", "help": "recommended replicas", "unit": ""}]
    assert client.post("/api/v1/query_exemplars", data={"query": FORECAST}).json() == {"status": "success", "data": []}
    build = client.get("/api/v1/status/buildinfo").json()
    assert build["status"] == "success" and build["data"]["version"].startswith("2.") and "features" not in build["data"]


def test_an_api_key_sees_only_its_tenant_on_every_prometheus_endpoint(published):
    app = FastAPI()
    app.include_router(prometheus_api.router)
    prometheus_api.attach(app, PrometheusAPI(published, lambda: anyio.CapacityLimiter(1)))

    @app.middleware("http")
    async def authenticated_as_duel(request, call_next):  # what TenantAuthMiddleware sets for duel's key
        request.state.tenant = "duel"
        return await call_next(request)

    end = now_seconds()
    with TestClient(app) as client:
        assert client.get("/api/v1/label/customer/values").json()["data"] == ["duel"]
        assert {s["customer"] for s in client.get("/api/v1/series", params={"match[]": "helios_recommendation"}).json()["data"]} == {"duel"}
        ranged = client.get("/api/v1/query_range", params={"query": "helios_recommendation", "start": end - 600,
                                                           "end": end, "step": 60}).json()["data"]["result"]
        assert {r["metric"]["customer"] for r in ranged} == {"duel"}
        for path, params in (("/api/v1/query", {"query": FORECAST}),  # arena's series
                             ("/api/v1/query_range", {"query": f"sum({FORECAST})", "start": end - 60, "end": end, "step": 60}),
                             ("/api/v1/series", {"match[]": 'helios_recommendation{customer="arena"}'})):
            refused = client.get(path, params=params)
            assert refused.status_code == 403, (path, refused.text)
            assert refused.json()["error"] == "this API key belongs to tenant 'duel', not 'arena'"
        unnamed = client.get("/api/v1/query", params={"query": 'helios_forecast_value{customer=~"arena|x", horizon="1h"}'})
        assert unnamed.status_code == 422 and "no series matches" in unnamed.json()["error"]  # invisible, not named


def test_a_past_step_is_answered_as_published_and_the_steps_keep_their_series_once(published, tenants):
    """serving/published.py keeps a step as its values beside names, labels and help shared with the
    step before: a day of a one-minute tenant's steps for 50 tenants must fit the service's memory."""
    now = pd.Timestamp.now(tz="UTC")
    past = now - 3 * STEP
    assert published.at("arena", past, now) == tenants(past, "arena")
    _, steps = published.steps_upto("arena", now)
    assert len(steps) == 13 and len({id(step.series) for step in steps.values()}) == 1
