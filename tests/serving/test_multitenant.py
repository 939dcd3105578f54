"""The multi-tenant mode: one service holds every tenant's champions and X-API-Key selects the
tenant. A key for one tenant never reads another's forecasts, anomalies, recommendations or series,
on any endpoint."""

from datetime import UTC, datetime, timedelta

import pytest

from tests.harness.serve_harness import bentoml_serve

pytestmark = pytest.mark.slow  # starts real processes: the real-process tier (make test-fast skips it)




@pytest.fixture(scope="module")
def shared(keys, tmp_path_factory):
    with bentoml_serve(tmp_path_factory.mktemp("multi"), "--arg", "tenants=arena,duel", "--arg", "api_keys=true") as client:
        yield client


ENDPOINTS = [
    ("POST", "/predict", {"json": {"metric": "concurrent_users", "horizon": 15}}),
    ("GET", "/predict", {"params": {"metric": "concurrent_users", "horizon": 15}}),
    ("POST", "/detect", {"json": {}}),
    ("POST", "/recommend", {"json": {"service": "game-server"}}),
    # A deploy two days back: inside the detector's history, far from the incidents other tests inject.
    ("POST", "/annotations", {"json": {"time": (datetime.now(UTC) - timedelta(days=2)).isoformat(), "tags": ["deploy"]}}),
    ("GET", "/api/v1/query", {"params": {"query": 'helios_forecast_value{metric="concurrent_users", horizon="1h"}'}}),
    ("GET", "/metrics", {}),
]


@pytest.mark.parametrize(("method", "path", "request_args"), ENDPOINTS)
def test_no_key_or_a_wrong_key_is_refused(shared, method, path, request_args):
    assert shared.request(method, path, **request_args).status_code == 401
    wrong = shared.request(method, path, headers={"X-API-Key": "hel_nope_nope"}, **request_args)
    assert wrong.status_code == 401 and "X-API-Key" in wrong.text


def test_a_missing_key_and_a_key_that_is_not_valid_are_told_apart(shared, keys):
    """Both answered "a valid X-API-Key header is required": a client sending a Bearer token, or a revoked
    key, could not tell whether its key was read at all."""
    body = {"metric": "concurrent_users", "horizon": 15}
    missing = shared.post("/predict", json=body)
    assert missing.status_code == 401 and "no API key" in missing.json()["error"]
    for headers in ({"X-API-Key": "hel_nope_nope"}, {"Authorization": "Bearer hel_nope_nope"}):
        wrong = shared.post("/predict", json=body, headers=headers)
        assert wrong.status_code == 401 and "not valid" in wrong.json()["error"], headers


@pytest.mark.parametrize(("method", "path", "request_args"), ENDPOINTS)
@pytest.mark.parametrize("tenant", ["arena", "duel"])
def test_a_key_sees_only_its_own_tenant(shared, keys, method, path, request_args, tenant):
    other = "duel" if tenant == "arena" else "arena"
    response = shared.request(method, path, headers={"X-API-Key": keys[tenant]}, **request_args)
    assert response.status_code == 200, response.text
    assert f'"{tenant}"' in response.text or f'customer="{tenant}"' in response.text
    assert other not in response.text


@pytest.mark.parametrize(("method", "path", "request_args"), ENDPOINTS[:5])
def test_naming_another_tenant_is_forbidden(shared, keys, method, path, request_args):
    args = {k: dict(v) for k, v in request_args.items()}
    (args.get("json") if "json" in args else args["params"])["tenant"] = "duel"
    response = shared.request(method, path, headers={"X-API-Key": keys["arena"]}, **args)
    assert response.status_code == 403 and "belongs to tenant 'arena'" in response.text


def test_naming_another_tenant_in_a_query_is_403_and_its_series_do_not_exist_for_a_key(shared, keys):
    query = 'helios_forecast_value{customer="duel", metric="concurrent_users", horizon="1h"}'
    response = shared.get("/api/v1/query", params={"query": query}, headers={"X-API-Key": keys["arena"]})
    assert response.status_code == 403 and "belongs to tenant 'arena', not 'duel'" in response.json()["error"]
    unnamed = 'helios_forecast_value{customer=~"d.*", metric="concurrent_users", horizon="1h"}'
    response = shared.get("/api/v1/query", params={"query": unnamed}, headers={"X-API-Key": keys["arena"]})
    assert response.status_code == 422 and response.json()["status"] == "error"


def test_health_probes_need_no_key(shared):
    assert shared.get("/readyz").status_code == 200
