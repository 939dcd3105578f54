"""The one Definitions object. The environment is read here, once."""

from __future__ import annotations

import os

from dagster import Definitions

from helios_pipelines.core.settings import apply_local_defaults
from helios_pipelines.defs.assets import ALL_ASSETS
from helios_pipelines.defs.automation import tenant_registry_sensor, training_job
from helios_pipelines.defs.resources import (
    BentoPackagerResource,
    MetricsSourceResource,
    MLflowResource,
    TenantRegistryResource,
)


def build_definitions(env: dict[str, str] | None = None) -> Definitions:
    env = dict(os.environ if env is None else env)
    return Definitions(
        assets=ALL_ASSETS,
        jobs=[training_job],
        sensors=[tenant_registry_sensor],
        resources={
            "tenants": TenantRegistryResource(config_dir=env.get("HELIOS_CONFIG_DIR")),
            "metrics_source": MetricsSourceResource(as_of=env.get("HELIOS_AS_OF")),
            "mlflow_tracking": MLflowResource(tracking_uri=env.get("MLFLOW_TRACKING_URI")),
            "packager": BentoPackagerResource(build_bento=env.get("HELIOS_BUILD_BENTO", "1") == "1"),
        },
    )


apply_local_defaults()
defs = build_definitions()
