"""The rendered pod runs as rendered: `helios deploy render`'s Deployments, started here with their own
commands and environment, from the tenant's built Bento in a fresh virtual environment that holds only
the Bento's declared requirements (nothing from the development venv), against the machine's
PostgreSQL.

What a cluster would provide is mapped onto the machine, and nothing else is added:
- the image: the folder of the Bento the rendered image names (``bentoml containerize`` copies it to ``/home/bentoml/bento``, whose
  entrypoint runs ``bentoml <args> $BENTO_PATH``) and a venv built from ``env/python/requirements.txt``;
  BENTOML_HOME (the image's model store) is the test session's, which holds the packed model;
- Secrets: filled with local values (the PostgreSQL schema's URL, a local receiver's URL and key);
- volumes: a ConfigMap's data written to a directory, an emptyDir an empty directory, each at the
  place of its mountPath (paths in the environment follow it);
- the host: loopback and a free port instead of 0.0.0.0:3000.

The venv costs minutes the first time (downloads); later runs reuse it (``tests/harness/venvs.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import bentoml
import pytest
import yaml
from sqlalchemy import text

from helios_pipelines.commands.deploy import DeploySettings, render
from helios_pipelines.core.ops import migrations
from helios_pipelines.core.ops.alert_receiver import AlertReceiver
from helios_pipelines.core.ops.store import Store
from helios_pipelines.core.tenants import load_tenants
from tests.conftest import FIXTURE_TENANTS
from tests.harness.serve_harness import free_port, running
from tests.harness.store_backends import schema_url
from tests.harness.venvs import cached_venv

pytestmark = pytest.mark.slow
SIGNING_SECRET = "pod-test-signing-secret"


def bento_venv(bento_dir: Path) -> Path:
    """A virtual environment with exactly the Bento's requirements."""
    requirements = bento_dir / "env" / "python" / "requirements.txt"
    return cached_venv("bento-venv", requirements.read_bytes(), ["-r", str(requirements)])


def container_env(container: dict, volumes: dict[str, Path], secrets: dict[str, dict[str, str]], base: dict) -> dict:
    """The container's environment as Kubernetes would give it, Secrets filled with local values and
    paths under a mount moved to where that volume is on this machine."""
    env = dict(base)
    for source in container.get("envFrom", []):
        env.update(secrets[source["secretRef"]["name"]])
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        else:
            ref = entry["valueFrom"]["secretKeyRef"]
            env[entry["name"]] = secrets[ref["name"]][ref["key"]]
    for mount in container.get("volumeMounts", []):
        for name, value in env.items():
            if value.startswith(mount["mountPath"]):
                env[name] = str(volumes[mount["name"]]) + value[len(mount["mountPath"]):]
    return env


def local_volumes(pod: dict, config_maps: dict[str, dict], root: Path) -> dict[str, Path]:
    found = {}
    for volume in pod["volumes"]:
        directory = root / volume["name"]
        directory.mkdir(parents=True, exist_ok=True)
        if "configMap" in volume:
            for file_name, content in config_maps[volume["configMap"]["name"]]["data"].items():
                (directory / file_name).write_text(content)
        found[volume["name"]] = directory
    return found


@pytest.fixture
def store_url(postgres_admin):
    """A PostgreSQL schema migrated and synced, as `helios db upgrade` and `helios tenants sync` leave it."""
    schema = f"helios_pod_{uuid.uuid4().hex[:12]}"
    with postgres_admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = schema_url(schema)
    migrations.upgrade(url)
    store = Store(url)
    store.sync_customers(load_tenants(FIXTURE_TENANTS))
    store.close()
    yield url
    with postgres_admin.begin() as connection:
        connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


def test_the_rendered_deployments_serve_and_deliver_from_the_bento_in_a_clean_venv(trained_arena, store_url, tmp_path):
    assert trained_arena.success
    # The tenant's alerts go to an on-call webhook; the bundle (packed from the fixture) routes none, so
    # an alert that arrives was routed by the ConfigMap.
    arena = load_tenants(FIXTURE_TENANTS).get("arena")
    hook = {"name": "oncall", "type": "webhook", "url_env": "HELIOS_WEBHOOK_ONCALL_URL", "secret_env": "ONCALL_SIGNING_SECRET",
            "events": ["anomaly_detected"]}
    routed = arena.model_validate(arena.model_dump() | {"alerts": arena.alerts.model_dump() | {"webhooks": [hook]}})
    files = {name: (json.loads(body) if name.endswith(".json") else yaml.safe_load(body))
             for name, body in render(routed, DeploySettings()).items()}
    # The image is the Bento the render names (the one serving the champions): `registry/<name>:<version>`.
    image = files["deployment.yaml"]["spec"]["template"]["spec"]["containers"][0]["image"]
    bento_dir = Path(bentoml.bentos.get(image.rsplit("/", 1)[1]).path)
    venv = bento_venv(bento_dir)
    config_maps = {files["alerts-configmap.yaml"]["metadata"]["name"]: files["alerts-configmap.yaml"]}
    base = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path / "home"), "BENTOML_HOME": os.environ["BENTOML_HOME"],
            "BENTOML_DO_NOT_TRACK": "true"}

    with AlertReceiver(SIGNING_SECRET, tmp_path / "received.jsonl") as receiver:
        secrets = {DeploySettings.store_secret: {"database-url": store_url},
                   "helios-alerts-arena": {"HELIOS_WEBHOOK_ONCALL_URL": receiver.url, "ONCALL_SIGNING_SECRET": SIGNING_SECRET}}
        pod = files["deployment.yaml"]["spec"]["template"]["spec"]
        (inference,) = pod["containers"]
        env = container_env(inference, local_volumes(pod, config_maps, tmp_path / "inference"), secrets, base)
        args = list(inference["args"])
        port = free_port()
        args[args.index("--host") + 1], args[args.index("--port") + 1] = "127.0.0.1", str(port)
        command = [str(venv / "bin" / "bentoml"), *args, str(bento_dir)]  # the image's entrypoint, spelled out

        worker_pod = files["alert-delivery.yaml"]["spec"]["template"]["spec"]
        (worker,) = worker_pod["containers"]
        worker_env = container_env(worker, local_volumes(worker_pod, config_maps, tmp_path / "worker"), secrets, base)
        worker_command = [str(venv / "bin" / worker["command"][0]), *worker["command"][1:]]
        worker_cwd = bento_dir / Path(worker["workingDir"]).relative_to("/home/bentoml/bento")
        with (running(command, port, tmp_path / "inference.log", env, cwd=tmp_path, ready_within=300) as service,
              (tmp_path / "worker.log").open("w") as worker_log):
            predicted = service.post("/predict", json={"metric": "concurrent_users", "horizon": 15})
            assert predicted.status_code == 200, predicted.text
            body = predicted.json()
            assert body["tenant"] == "arena" and 0 < body["lower"] <= body["value"] <= body["upper"]

            delivery = subprocess.Popen(worker_command, cwd=worker_cwd, env=worker_env, stdout=worker_log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
            try:
                # A spike at the last complete step (arena's step: 5 minutes), recorded as the caller asks:
                # client points are a what-if otherwise, never alerted.
                now = datetime.now(UTC).replace(second=0, microsecond=0)
                complete = now - timedelta(minutes=now.minute % 5 + 5)
                spike = [{"timestamp": complete.isoformat(), "value": body["upper"] * 20}]
                detected = service.post("/detect", json={"metric": "concurrent_users", "points": spike,
                                                         "record": True}).json()
                assert detected["scores"][0]["anomalous"] is True, detected
                deadline = time.monotonic() + 60
                while not receiver.out.exists() or not receiver.out.read_text().strip():
                    assert delivery.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
                    assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()[-3000:]
                    time.sleep(0.5)
            finally:
                delivery.terminate()
                delivery.wait(timeout=30)
    received = [json.loads(line) for line in receiver.out.read_text().splitlines()]
    # Signed with the Secret's key (checked by the receiver) and routed by the ConfigMap; the service's
    # scheduled detection may have sent more for arena (its own data, or the spike's resolve) by then.
    assert all(r["signature_verified"] and r["alert"]["tenant"] == "arena" for r in received), received
    assert [(r["alert"]["event"], r["alert"]["action"]) for r in received
            if r["alert"]["alert_key"].startswith("anomaly/arena/concurrent_users/")][:1] == [("anomaly_detected", "trigger")]
