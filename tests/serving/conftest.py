"""Fixtures the serving tests share: a second tenant ("duel") packed from cheap champions, and an
API key per tenant in the embedded store."""

import pandas as pd
import pytest

from helios_pipelines.core.ml.models.capacity import CapacityPlanner
from helios_pipelines.core.ml.models.detectors import make_detector
from helios_pipelines.core.ml.models.seasonal_naive import SeasonalNaive
from helios_pipelines.core.ml.tracking import CHAMPION, Tracker, registered_model_name
from helios_pipelines.core.sources.simulator import Simulator
from tests.conftest import FIXTURE_TENANTS


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
def keys(embedded_store, duel_bundle):
    from helios_pipelines.core.ops.store import DuplicateCustomerError

    duel, _ = duel_bundle
    try:  # another module of the session may have added it already
        with embedded_store.transaction() as session:
            embedded_store.add_customer(session, duel)
    except DuplicateCustomerError:
        pass
    return {"arena": embedded_store.rotate_key("arena"), "duel": embedded_store.rotate_key("duel")}
