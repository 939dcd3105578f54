"""Resources: the configurable edges of the pipeline (registry, source, MLflow, packaging)."""


import pandas as pd
from dagster import ConfigurableResource, InitResourceContext
from pydantic import PrivateAttr

from helios_pipelines.core.ml.models.calibration import LabelledEpisode
from helios_pipelines.core.ml.tracking import Tracker
from helios_pipelines.core.sources import MetricsSource, make_source
from helios_pipelines.core.tenants import TenantConfig, TenantRegistry, load_tenants


class TenantRegistryResource(ConfigurableResource):
    """The YAML tenant registry (``configs/tenants`` unless configured)."""

    config_dir: str | None = None

    def registry(self) -> TenantRegistry:
        return load_tenants(self.config_dir)

    def tenant(self, tenant_id: str) -> TenantConfig:
        return self.registry().get(tenant_id)


class MetricsSourceResource(ConfigurableResource):
    """Builds each tenant's source from its config. ``as_of`` pins the end of the training window
    (ISO time) so runs are reproducible; empty means now, floored to the hour."""

    as_of: str | None = None

    def window_end(self) -> pd.Timestamp:
        end = pd.Timestamp(self.as_of) if self.as_of else pd.Timestamp.now(tz="UTC").floor("1h")
        return end.tz_localize("UTC") if end.tzinfo is None else end.tz_convert("UTC")

    def source(self, tenant: TenantConfig) -> MetricsSource:
        return make_source(tenant, now=self.window_end())


class MLflowResource(ConfigurableResource):
    """MLflow tracking and registry; empty URI means the embedded SQLite under HELIOS_HOME. Versions
    are tagged with the run (the first of a re-execution chain), so a retried step can discard what an
    earlier attempt registered (``Tracker.discard_earlier_attempts``)."""

    tracking_uri: str | None = None
    _dagster_run: str | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        run = context.dagster_run
        self._dagster_run = (run.root_run_id or run.run_id) if run else None

    def tracker(self) -> Tracker:
        return Tracker(self.tracking_uri, dagster_run=self._dagster_run)


class OperatorVerdictsResource(ConfigurableResource):
    """Operators' verdicts on a tenant's anomaly episodes, from the Helios store: ``database_url``, or
    the embedded store under HELIOS_HOME (migrated on first use, as the service does)."""

    database_url: str | None = None

    def labelled_episodes(self, tenant_id: str) -> list[LabelledEpisode]:
        from helios_pipelines.core.ops.anomaly_log import labelled_episodes
        from helios_pipelines.core.ops.migrations import upgrade
        from helios_pipelines.core.ops.store import Store, database_url

        store = Store(self.database_url or database_url())
        try:
            if store.url.startswith("sqlite"):
                upgrade(store.url)
            return labelled_episodes(store, tenant_id)
        finally:
            store.close()


class BentoPackagerResource(ConfigurableResource):
    """Packs a tenant's champions into a BentoML model; ``build_bento`` also runs ``bentoml build``."""

    build_bento: bool = True
