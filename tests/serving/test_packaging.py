"""Packing a tenant's champions: the BentoML model `helios-<tenant>:latest`, which `helios serve` and a bare
`bentoml serve --arg tenants=<tenant>` load, is always the tenant's current champions."""

from __future__ import annotations

import pandas as pd

from helios_pipelines.core.ml.models.seasonal_naive import SeasonalNaive
from helios_pipelines.core.ml.tracking import CHAMPION, Tracker, registered_model_name
from helios_pipelines.core.sources.simulator import Simulator
from helios_pipelines.core.tenants import load_tenants
from tests.conftest import FIXTURE_TENANTS


def test_packing_champions_packed_before_makes_them_latest_again(mlflow_uri):
    """Trained v1, promoted v2, rolled back to v1: the third packing finds v1's model already in the store,
    and `latest` must move back to it, or the service keeps serving the rolled-back v2."""
    import bentoml

    from serving.packaging import save_bento_model

    arena = load_tenants(FIXTURE_TENANTS).get("arena")
    tenant = arena.model_copy(update={"id": "flipflop"})  # a BentoML model name of its own in the session's store
    end = pd.Timestamp.now(tz="UTC").floor("1h")
    history = Simulator(tenant).fetch(end - pd.Timedelta("3D"), end)["concurrent_users"]
    tracker = Tracker(mlflow_uri)
    name = registered_model_name(tenant.id, "forecaster", "concurrent_users")
    with tracker.start_run(tenant.id, "two versions"):
        v1, v2 = (tracker.log_model(SeasonalNaive(step=tenant.step_timedelta, max_horizon=12, metric="concurrent_users")
                                    .fit(history), name).version for _ in range(2))

    packed = []
    for champion in (v1, v2, v1):  # trained, promoted, rolled back
        tracker.set_alias(name, CHAMPION, champion)
        packed.append(save_bento_model(tenant, tracker))

    assert packed[0] == packed[2] != packed[1]
    latest = bentoml.models.get(f"helios-{tenant.id}:latest")
    assert str(latest.tag) == packed[2]
    assert latest.info.metadata["forecaster:concurrent_users"] == f"{name}/{v1}"
