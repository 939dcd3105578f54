"""Packing a tenant's champions, and which packed model is served: `helios serve` serves the champions the
MLflow registry names now, `helios-<tenant>:latest` (what a bare `bentoml serve --arg tenants=<tenant>`
loads) is the last champions packed or served by `helios serve`, and `helios deploy render` names the
Bento serving the champions as the Deployment's image."""

from __future__ import annotations

import pandas as pd
import pytest

from helios_pipelines.core.ml import review
from helios_pipelines.core.ml.models.seasonal_naive import SeasonalNaive
from helios_pipelines.core.ml.tracking import CHAMPION, Tracker, registered_model_name
from helios_pipelines.core.sources.simulator import Simulator
from tests.conftest import FIXTURE_TENANTS


@pytest.fixture
def two_versions(tmp_path, mlflow_uri):
    """A copy of the arena tenant under an id of its own (its BentoML model name is this test's alone in
    the session's store) with two registered versions of its forecaster, v1 the champion."""
    from helios_pipelines.core.tenants import load_tenants

    config_dir = tmp_path / "tenants"
    config_dir.mkdir()
    tenant_id = f"flip-{tmp_path.name[-12:].lower().replace('_', '-')}"
    (config_dir / f"{tenant_id}.yaml").write_text((FIXTURE_TENANTS / "arena.yaml").read_text().replace("id: arena", f"id: {tenant_id}"))
    tenant = load_tenants(config_dir).get(tenant_id)
    end = pd.Timestamp.now(tz="UTC").floor("1h")
    history = Simulator(tenant).fetch(end - pd.Timedelta("3D"), end)["concurrent_users"]
    tracker = Tracker(mlflow_uri)
    name = registered_model_name(tenant.id, "forecaster", "concurrent_users")
    with tracker.start_run(tenant.id, "two versions"):
        v1, v2 = (tracker.log_model(SeasonalNaive(step=tenant.step_timedelta, max_horizon=12, metric="concurrent_users")
                                    .fit(history), name).version for _ in range(2))
    tracker.set_alias(name, CHAMPION, v1)
    return config_dir, tenant, tracker, name, v1, v2


def served_command(config_dir, tenant, tracker, monkeypatch) -> list[str]:
    """The `bentoml serve` command `helios serve <tenant>` replaces itself with (os.execv captured)."""
    from click.testing import CliRunner

    from helios_pipelines.cli import main

    commands = []
    monkeypatch.setattr("os.execv", lambda path, command: commands.append(command))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracker.tracking_uri)
    result = CliRunner().invoke(main, ["--config-dir", str(config_dir), "serve", tenant.id, "--port", "1"])
    assert result.exit_code == 0, result.output
    [command] = commands
    return command


def test_packing_champions_packed_before_makes_them_latest_again(two_versions):
    """Trained v1, promoted v2, rolled back to v1: the third packing finds v1's model already in the store,
    and `latest` must move back to it, or the service keeps serving the rolled-back v2."""
    import bentoml

    from serving.packaging import save_bento_model

    _, tenant, tracker, name, v1, v2 = two_versions
    packed = []
    for champion in (v1, v2, v1):  # trained, promoted, rolled back
        tracker.set_alias(name, CHAMPION, champion)
        packed.append(save_bento_model(tenant, tracker))

    assert packed[0] == packed[2] != packed[1]
    latest = bentoml.models.get(f"helios-{tenant.id}:latest")
    assert str(latest.tag) == packed[2]
    assert latest.info.metadata["forecaster:concurrent_users"] == f"{name}/{v1}"


def test_helios_serve_serves_the_champion_after_a_rollback_nothing_repacked(two_versions, monkeypatch):
    """v1 trained and packed, v2 promoted and packed, then `helios models rollback`: only the registry's
    alias moves, and without the Dagster daemon nothing repacks. `helios serve` served `latest`, v2."""
    from serving.packaging import save_bento_model

    config_dir, tenant, tracker, name, v1, v2 = two_versions
    trained = save_bento_model(tenant, tracker)
    review.promote(tracker, name, by="ana", reason="test", version=v2)
    promoted = save_bento_model(tenant, tracker)
    review.rollback(tracker, name, by="ana", reason="test")

    command = served_command(config_dir, tenant, tracker, monkeypatch)
    assert f"bundles={trained}" in command and f"bundles={promoted}" not in command


def test_helios_serve_serves_the_packing_of_the_current_config_after_it_changed_and_changed_back(
        two_versions, monkeypatch):
    """The same champions packed with config A, then B, then the config is set back to A (no retrain, so
    nothing repacks): `helios serve` must serve A's packing. It took the newest packing of the champions by
    creation time, B's, and served B's events and thresholds under config A."""
    from helios_pipelines.core.tenants import load_tenants
    from serving.packaging import save_bento_model

    config_dir, tenant, tracker, *_ = two_versions
    written = config_dir / f"{tenant.id}.yaml"
    config_a = written.read_text()
    packed_a = save_bento_model(tenant, tracker)
    written.write_text(config_a.replace("multiplier: 2.5", "multiplier: 3.0"))
    packed_b = save_bento_model(load_tenants(config_dir).get(tenant.id), tracker)
    assert packed_b != packed_a
    written.write_text(config_a)

    command = served_command(config_dir, tenant, tracker, monkeypatch)
    assert f"bundles={packed_a}" in command, command



def test_deploy_render_names_the_bento_of_the_champions_so_a_promotion_or_rollback_rolls_the_pods(
        two_versions, monkeypatch, tmp_path):
    """The rendered image was `:latest` whatever the champions: promoted or rolled back, the re-rendered
    Deployment did not change, so Kubernetes never rolled the pods and they served what `latest` was when
    a node pulled it. Now: v1's Bento, then (once built) v2's, then after the rollback v1's again."""
    import bentoml
    import yaml
    from click.testing import CliRunner

    from helios_pipelines.cli import main
    from serving.packaging import build_bento, save_bento_model

    config_dir, tenant, tracker, name, v1, v2 = two_versions
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracker.tracking_uri)
    renders = iter(range(100))

    def helios(*args: str):
        return CliRunner().invoke(main, ["--config-dir", str(config_dir), *args])

    def rendered_image(*options: str) -> str:
        out = tmp_path / f"render-{next(renders)}"
        result = helios("deploy", "render", tenant.id, "--out", str(out), *options)
        assert result.exit_code == 0, result.output
        deployments = [yaml.safe_load((out / f).read_text()) for f in ("deployment.yaml", "alert-delivery.yaml")]
        [image] = {d["spec"]["template"]["spec"]["containers"][0]["image"] for d in deployments}
        return image

    def served_by(bento: str) -> str:
        """The forecaster version the Bento serves: the metadata of the packed model its arguments name."""
        model = bentoml.models.get(bentoml.bentos.get(bento).info.args["bundles"])
        return model.info.metadata["forecaster:concurrent_users"]

    def bentos() -> set[str]:
        return {str(b.tag) for b in bentoml.bentos.list(f"helios-{tenant.id}")}

    # Trained with v1 the champion: the training run packs it and builds its Bento (the tenant_bento asset).
    bento_v1 = build_bento(tenant.id, save_bento_model(tenant, tracker))
    assert served_by(bento_v1) == f"{name}/{v1}"
    # `bentoml containerize helios-<tenant>:<version>` tags the image with the Bento's tag.
    assert rendered_image() == f"gcr.io/YOUR_PROJECT/{bento_v1}"

    review.promote(tracker, name, by="ana", reason="test", version=v2)
    # No Bento serves v2 yet (no Dagster daemon to run the champion change sensor): an error saying what
    # to run, not v1's image again.
    refused = helios("deploy", "render", tenant.id, "--out", str(tmp_path / "refused"))
    assert refused.exit_code == 1
    assert f"tenant '{tenant.id}'" in refused.output and f"helios deploy build {tenant.id}" in refused.output
    assert f"{name}/{v2}" in refused.output

    built = helios("deploy", "build", tenant.id)
    assert built.exit_code == 0, built.output
    [bento_v2] = bentos() - {bento_v1}
    assert served_by(bento_v2) == f"{name}/{v2}" and bento_v2 in built.output
    promoted = rendered_image()
    assert promoted == f"gcr.io/YOUR_PROJECT/{bento_v2}" != f"gcr.io/YOUR_PROJECT/{bento_v1}"

    review.rollback(tracker, name, by="ana", reason="test")
    # v1's Bento was built before: its image comes back without a rebuild, and building again reuses it.
    assert rendered_image() == f"gcr.io/YOUR_PROJECT/{bento_v1}"
    assert helios("deploy", "build", tenant.id).exit_code == 0 and bentos() == {bento_v1, bento_v2}
    # An explicit tag still wins.
    assert rendered_image("--image-tag", "1.2.3") == f"gcr.io/YOUR_PROJECT/helios-{tenant.id}:1.2.3"


def test_after_a_config_change_deploy_render_refuses_the_bento_packing_the_old_config(two_versions, monkeypatch, tmp_path):
    """The same champions packed again with a changed config (a training run without a Bento build): the
    Bento built before carries the old config (events, thresholds, scaling limits), so render must not
    name it, and `helios deploy build` builds one packing the new config."""
    import bentoml
    import yaml
    from click.testing import CliRunner

    from helios_pipelines.cli import main
    from helios_pipelines.core.tenants import load_tenants
    from serving.packaging import build_bento, save_bento_model

    config_dir, tenant, tracker, *_ = two_versions
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracker.tracking_uri)
    old = build_bento(tenant.id, save_bento_model(tenant, tracker))
    written = config_dir / f"{tenant.id}.yaml"
    written.write_text(written.read_text().replace("multiplier: 2.5", "multiplier: 3.0"))
    repacked = save_bento_model(load_tenants(config_dir).get(tenant.id), tracker)
    assert bentoml.bentos.get(old).info.args["bundles"] != repacked

    render = ["--config-dir", str(config_dir), "deploy", "render", tenant.id]
    refused = CliRunner().invoke(main, [*render, "--out", str(tmp_path / "refused")])
    assert refused.exit_code == 1 and f"helios deploy build {tenant.id}" in refused.output, refused.output
    built = CliRunner().invoke(main, ["--config-dir", str(config_dir), "deploy", "build", tenant.id])
    assert built.exit_code == 0, built.output
    [new] = {str(b.tag) for b in bentoml.bentos.list(f"helios-{tenant.id}")} - {old}
    assert bentoml.bentos.get(new).info.args["bundles"] == repacked
    rendered = CliRunner().invoke(main, [*render, "--out", str(tmp_path / "rendered")])
    assert rendered.exit_code == 0, rendered.output
    image = yaml.safe_load((tmp_path / "rendered" / "deployment.yaml").read_text())["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"gcr.io/YOUR_PROJECT/{new}"


@pytest.mark.slow  # starts a real service
def test_stopping_helios_serve_stops_the_service_it_started(two_versions, tmp_path):
    """SIGTERM to `helios serve` alone (a supervisor's stop, `kill <pid>`) left its `bentoml serve` child
    serving and holding the port, so the next `make demo` could not start."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import httpx

    from tests.harness.serve_harness import free_port, stop

    config_dir, tenant, tracker, *_ = two_versions
    port = free_port()
    command = [sys.executable, "-m", "helios_pipelines.cli", "--config-dir", str(config_dir), "serve", tenant.id,
               "--port", str(port)]
    env = os.environ | {"MLFLOW_TRACKING_URI": tracker.tracking_uri}

    def answers() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    with (tmp_path / "serve.log").open("w") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not answers():
            assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(0.5)
        os.kill(process.pid, signal.SIGTERM)  # helios serve's own process, not its group
        deadline = time.monotonic() + 30
        while answers() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not answers(), "the service still answers 30 s after its helios serve was stopped"
    finally:
        stop(process)  # the whole group, whatever the outcome
