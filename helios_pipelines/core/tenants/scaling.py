"""The tenant file's ``scaling:``: workloads whose replicas follow a forecast metric."""

from __future__ import annotations

from pydantic import Field, model_validator

from helios_pipelines.core.tenants.base import SERIES_NAME_PATTERN, Strict


class ScalingBehaviour(Strict):
    """HPA behaviour the recommendation honours (the integration guide's KEDA settings by default)."""

    scale_up_window_s: int = Field(30, ge=0)
    scale_up_percent: float = Field(100, gt=0)
    scale_up_period_s: int = Field(15, gt=0)
    scale_down_window_s: int = Field(300, ge=0)
    scale_down_percent: float = Field(10, gt=0, le=100)
    scale_down_period_s: int = Field(60, gt=0)


class ReplicaCountSeries(Strict):
    """Where the workload's current replica count is read, in the tenant's source: e.g. Prometheus'
    ``kube_deployment_status_replicas{deployment="game-server"}`` (kube-state-metrics)."""

    series: str = Field(pattern=SERIES_NAME_PATTERN, description="the source's own series name")
    query: str | None = Field(None, description="query in the source's language; defaults to the series")


class ScalingTarget(Strict):
    """A workload whose replicas follow a forecast metric: the capacity model behind /recommend."""

    service: str
    metric: str = Field(description="logical metric that drives it (must be forecast)")
    capacity_per_replica: float | str = Field(
        description="units of the metric one replica serves, or the name of a threshold holding it"
    )
    target_utilization: float = Field(0.8, gt=0, le=1)
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(100, ge=1)
    startup_seconds: int = Field(90, ge=0, description="pod start-up time; with the stabilisation window it sets the lead time")
    quantile: float = Field(0.9, gt=0.5, lt=1, description="upper forecast quantile kept under the capacity_critical utilisation")
    behaviour: ScalingBehaviour = ScalingBehaviour()
    current_replicas: ReplicaCountSeries | None = Field(
        None, description="the current replica count in the source; published helios_desired_replicas starts from it"
    )
    # Observed fleet series (logical metric names): with them capacity and lead time are learned,
    # the configured values above staying the prior and guard rail.
    utilization_metric: str | None = Field(None, description="the service's utilisation as a ratio of its capacity")
    startup_metric: str | None = Field(None, description="pods' start-to-ready seconds (kube-state-metrics)")
    price_per_pod_hour: float = Field(0.0, ge=0, description="what a replica costs per hour: event scorecards' cost delta")

    @model_validator(mode="after")
    def _bounds(self) -> ScalingTarget:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas {self.min_replicas} is above max_replicas {self.max_replicas}")
        return self
