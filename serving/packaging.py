"""Packaging a tenant for serving: champions from the MLflow registry -> a bundle -> a BentoML model
(``helios-<tenant>``) -> a per-tenant Bento.

The BentoML model's version is derived from the pinned champion versions, so packaging the same
champions twice gives the same model, and a Bento always names exactly the versions it serves.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from helios_pipelines.core.ml.models.warm_start import WARM_STATE_FILE
from helios_pipelines.core.ml.tracking import CHAMPION, Tracker, registered_model_name
from helios_pipelines.core.settings import helios_home
from helios_pipelines.core.tenants import TenantConfig
from serving.bundle import MANIFEST

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVICE = "serving.service:HeliosService"


class PackagingError(RuntimeError):
    pass


def bento_model_name(tenant_id: str) -> str:
    return f"helios-{tenant_id}"


def champion_pins(tenant: TenantConfig, tracker: Tracker) -> dict[str, dict]:
    """The tenant's champions: {role: {name, version, kind}}; roles are ``forecaster:<metric>``,
    ``detector`` and ``planner``."""
    wanted = {f"forecaster:{m}": registered_model_name(tenant.id, "forecaster", m) for m in tenant.forecast_metrics}
    if tenant.anomaly_metrics:
        wanted["detector"] = registered_model_name(tenant.id, "anomaly_detector")
    if tenant.scaling:
        wanted["planner"] = registered_model_name(tenant.id, "capacity_planner")
    pins = {}
    for role, name in wanted.items():
        version = tracker.version_by_alias(name, CHAMPION)
        if version is not None:
            pins[role] = {"name": name, "version": version.version, "kind": version.tags.kind or ""}
    # A model without a champion (say a detector too noisy to promote) is left out: the service answers
    # 404 for it and serves the rest. A tenant with no champion at all has nothing to serve.
    if not pins:
        raise PackagingError(f"tenant '{tenant.id}' has no champion yet: {', '.join(wanted.values())}")
    return pins


def assemble_bundle(tenant: TenantConfig, pins: dict[str, dict], tracker: Tracker, destination: Path) -> Path:
    """Download each pinned model into ``destination`` and write the manifest beside them."""
    destination.mkdir(parents=True, exist_ok=True)
    manifest: dict = {"tenant": tenant.model_dump(mode="json"), "forecasters": {}, "pins": pins}
    for role, pin in sorted(pins.items()):
        local = destination / pin["name"]
        with tempfile.TemporaryDirectory() as tmp:
            found = tracker.download_model_dir(pin["name"], pin["version"], Path(tmp))
            # what only a retrain's warm start reads stays in the registry, out of the Bento
            shutil.copytree(found, local, dirs_exist_ok=True, ignore=shutil.ignore_patterns(WARM_STATE_FILE))
        entry = pin | {"path": pin["name"]}
        if role.startswith("forecaster:"):
            manifest["forecasters"][role.split(":", 1)[1]] = entry
        elif role == "detector":
            manifest["detector"] = entry | {"metrics": sorted(tenant.anomaly_metrics)}
        else:
            manifest["planner"] = entry
    (destination / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return destination


def bundle_version(pins: dict[str, dict], tenant: TenantConfig) -> str:
    """Stable for the same champions and tenant config."""
    payload = json.dumps({"pins": pins, "tenant": tenant.model_dump(mode="json")}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _bentoml():
    """BentoML fixes its store's location when first imported: the embedded default (under HELIOS_HOME)
    is filled in here, at packaging time, because importing the Dagster definitions must not."""
    os.environ.setdefault("BENTOML_HOME", str(helios_home() / "bentoml"))
    import bentoml

    return bentoml


def save_bento_model(tenant: TenantConfig, tracker: Tracker) -> str:
    """The tenant's current champions with its current config as the BentoML model
    ``helios-<tenant>:<version>``, packed now unless they were; returns its tag. What `helios serve` serves:
    a promotion or rollback moves only the registry's alias and a config edit only the file, and without
    the Dagster daemon nothing repacks (serving `latest`, or the newest packing of the champions, served
    the old champions or the old config)."""
    bentoml = _bentoml()

    pins = champion_pins(tenant, tracker)
    tag = f"{bento_model_name(tenant.id)}:{bundle_version(pins, tenant)}"
    try:
        packed = bentoml.models.get(tag)
    except bentoml.exceptions.NotFound:
        pass
    else:
        # Champions packed before (a rollback, a promotion back): BentoML moves `latest` only when it
        # creates a model, and `helios-<tenant>:latest` is what `helios serve` loads, so it is moved
        # here. Its store keeps the pointer as the file `latest` beside the versions (<store>/<name>/<version>).
        (Path(packed.path).parent / "latest").write_text(packed.tag.version)
        return str(packed.tag)
    labels = {"tenant": tenant.id, "owner": "helios"}
    with bentoml.models.create(tag, labels=labels, metadata=pinned_versions(pins)) as model:
        assemble_bundle(tenant, pins, tracker, Path(model.path))
    return tag


def pinned_versions(pins: dict[str, dict]) -> dict[str, str]:
    """A packed model's metadata: {role: "<registered model>/<version>"} of the champions it holds."""
    return {role: f"{p['name']}/{p['version']}" for role, p in pins.items()}


def packed_champions(tenant: TenantConfig, tracker: Tracker) -> list:
    """The tenant's BentoML models packed with exactly its current champions (a training run packs its
    champions with the configuration it trained with, so one set of champions may have several)."""
    bentoml = _bentoml()

    wanted = pinned_versions(champion_pins(tenant, tracker))
    try:
        return [m for m in bentoml.models.list(bento_model_name(tenant.id)) if dict(m.info.metadata) == wanted]
    except bentoml.exceptions.NotFound:  # nothing of the tenant packed yet
        return []


def champions_bento(tenant: TenantConfig, tracker: Tracker) -> str | None:
    """The tag of the newest Bento built to serve the tenant's current champions with its current
    configuration (its ``bundles`` argument, what its ``bentoml serve`` loads, names a model packed with
    exactly them and that configuration), or None when none was. After a rollback without a rebuild this
    is the Bento built for those champions before; after a config change it is None: a Bento packing the
    same champions with the old config would serve stale events, thresholds and scaling limits. The
    ``alerts`` section is not compared: the rendered ConfigMap replaces the packed one at start
    (serving/alert_routing.py), so a routing change is a rollout, not a new Bento."""
    bentoml = _bentoml()

    def served(config: dict) -> dict:
        return {key: value for key, value in config.items() if key != "alerts"}

    wanted = served(tenant.model_dump(mode="json"))
    models = {str(model.tag) for model in packed_champions(tenant, tracker)
              if served(json.loads((Path(model.path) / MANIFEST).read_text())["tenant"]) == wanted}
    try:
        bentos = bentoml.bentos.list(bento_model_name(tenant.id))
    except bentoml.exceptions.NotFound:  # no Bento of the tenant built yet
        return None
    serving = [bento for bento in bentos if bento.info.args.get("bundles") in models]
    return str(max(serving, key=lambda bento: bento.info.creation_time).tag) if serving else None


def build_bento(tenant_id: str, model_tag: str) -> str:
    """``bentoml build`` of the per-tenant service pinned to ``model_tag``; works offline."""
    bentoml = _bentoml()

    bento = bentoml.bentos.build(
        SERVICE,
        name=bento_model_name(tenant_id),
        labels={"tenant": tenant_id},
        include=["serving/**/*.py", "helios_pipelines/**/*.py"],
        python={"lock_packages": False, "requirements_txt": "serving/requirements.txt"},
        models=[model_tag],
        args={"tenants": tenant_id, "bundles": model_tag},
        build_ctx=str(REPO_ROOT),
    )
    return str(bento.tag)
