"""The multi-tenant mode: one service holds every tenant's champions and X-API-Key selects the
tenant. A key for one tenant never reads another's forecasts, anomalies, recommendations or series,
on any endpoint."""

import pandas as pd
import pytest

from helios_pipelines.core.models.capacity import CapacityPlanner
from helios_pipelines.core.models.detectors import make_detector
from helios_pipelines.core.models.seasonal_naive import SeasonalNaive
from helios_pipelines.core.sources.simulator import Simulator
from helios_pipelines.core.tracking import CHAMPION, Tracker, registered_model_name
from tests.conftest import FIXTURE_TENANTS
from tests.test_serving import bentoml_serve, embedded_store  # noqa: F401

pytestmark = pytest.mark.slow  # starts real processes: the real-process tier (make test-fast skips it)


@pytest.fixture(scope="module")
def duel_bundle(trained_arena):
    """A second tenant packed from champions registered directly (cheap models, same packaging path)."""
    from helios_pipelines.core.tenants import load_tenants
    from serving.packaging import save_bento_model

    base = load_tenants(FIXTURE_TENANTS).get("arena")
    duel = base.model_copy(update={"id": "duel", "name": "Duel", "source": base.source.model_copy(update={"seed": 21})})
    end = pd.Timestamp.now(tz="UTC").floor("1h")
    frame = Simulator(duel).fetch(end - pd.Timedelta("3D"), end)
    tracker = Tracker()
    with tracker.start_run("duel", "cheap champions"):
        for model, name in [
            (SeasonalNaive(step=duel.step_timedelta, max_horizon=12, metric="concurrent_users").fit(frame["concurrent_users"]),
             registered_model_name("duel", "forecaster", "concurrent_users")),
            (make_detector("combined").fit(frame[sorted(duel.anomaly_metrics)]), registered_model_name("duel", "anomaly_detector")),
            (CapacityPlanner.from_tenant(duel), registered_model_name("duel", "capacity_planner")),
        ]:
            version = tracker.log_model(model, name)
            tracker.set_alias(name, CHAMPION, version.version)
    return duel, save_bento_model(duel, tracker)


@pytest.fixture(scope="module")
def keys(embedded_store, duel_bundle):  # noqa: F811 - the fixture imported above
    from helios_pipelines.core.store import DuplicateCustomerError

    duel, _ = duel_bundle
    try:  # another module of the session may have added it already
        with embedded_store.transaction() as session:
            embedded_store.add_customer(session, duel)
    except DuplicateCustomerError:
        pass
    return {"arena": embedded_store.rotate_key("arena"), "duel": embedded_store.rotate_key("duel")}


@pytest.fixture(scope="module")
def shared(keys, tmp_path_factory):
    with bentoml_serve(tmp_path_factory.mktemp("multi"), "--arg", "tenants=arena,duel", "--arg", "api_keys=true") as client:
        yield client


ENDPOINTS = [
    ("POST", "/predict", {"json": {"metric": "concurrent_users", "horizon": 15}}),
    ("GET", "/predict", {"params": {"metric": "concurrent_users", "horizon": 15}}),
    ("POST", "/detect", {"json": {}}),
    ("POST", "/recommend", {"json": {"service": "game-server"}}),
    ("GET", "/api/v1/query", {"params": {"query": 'helios_forecast_value{metric="concurrent_users", horizon="1h"}'}}),
    ("GET", "/metrics", {}),
]


@pytest.mark.parametrize(("method", "path", "request_args"), ENDPOINTS)
def test_no_key_or_a_wrong_key_is_refused(shared, method, path, request_args):
    assert shared.request(method, path, **request_args).status_code == 401
    wrong = shared.request(method, path, headers={"X-API-Key": "hel_nope_nope"}, **request_args)
    assert wrong.status_code == 401 and "X-API-Key" in wrong.text


@pytest.mark.parametrize(("method", "path", "request_args"), ENDPOINTS)
@pytest.mark.parametrize("tenant", ["arena", "duel"])
def test_a_key_sees_only_its_own_tenant(shared, keys, method, path, request_args, tenant):
    other = "duel" if tenant == "arena" else "arena"
    response = shared.request(method, path, headers={"X-API-Key": keys[tenant]}, **request_args)
    assert response.status_code == 200, response.text
    assert f'"{tenant}"' in response.text or f'customer="{tenant}"' in response.text
    assert other not in response.text


@pytest.mark.parametrize(("method", "path", "request_args"), ENDPOINTS[:4])
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
