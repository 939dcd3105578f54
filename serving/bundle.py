"""A tenant bundle, loaded: the directory ``tenant_bento`` packs, with ``manifest.json`` and one Helios
model directory per champion. The manifest carries everything serving needs (the tenant's metrics,
step, source, events, thresholds and the pinned model versions): serving never reads ``configs/``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from helios_pipelines.core.ml.models.base import AnomalyDetector, Forecaster, SavableModel
from helios_pipelines.core.ml.models.capacity import CapacityPlanner
from helios_pipelines.core.tenants import TenantConfig

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class PinnedModel:
    name: str
    version: str
    kind: str

    def as_dict(self) -> dict:
        return {"name": self.name, "version": self.version, "kind": self.kind}

    @classmethod
    def from_entry(cls, entry: dict | None) -> PinnedModel | None:
        return cls(entry["name"], entry["version"], entry["kind"]) if entry else None


@dataclass
class TenantBundle:
    manifest: dict
    tenant: TenantConfig
    forecasters: dict[str, Forecaster]
    pinned: dict[str, PinnedModel]
    detector: AnomalyDetector | None
    detector_pin: PinnedModel | None
    planner: CapacityPlanner | None
    planner_pin: PinnedModel | None


def load_bundle(bundle_dir: str | Path) -> TenantBundle:
    bundle_dir = Path(bundle_dir)
    manifest = json.loads((bundle_dir / MANIFEST).read_text())
    forecasters, pinned = {}, {}
    for metric, entry in manifest["forecasters"].items():
        forecasters[metric] = SavableModel.load(bundle_dir / entry["path"])
        pinned[metric] = PinnedModel.from_entry(entry)
    detector, planner = manifest.get("detector"), manifest.get("planner")
    return TenantBundle(
        manifest=manifest,
        tenant=TenantConfig.model_validate(manifest["tenant"]),
        forecasters=forecasters,
        pinned=pinned,
        detector=SavableModel.load(bundle_dir / detector["path"]) if detector else None,
        detector_pin=PinnedModel.from_entry(detector),
        planner=SavableModel.load(bundle_dir / planner["path"]) if planner else None,
        planner_pin=PinnedModel.from_entry(planner),
    )
