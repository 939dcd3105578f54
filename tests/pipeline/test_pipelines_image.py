"""The training platform's image serves Helios' code location as Dagster's Helm chart starts it:
deploy/pipelines/Dockerfile, replayed on this machine (it has no Docker), with the values of
`helios platform render`.

Every step is read from the Dockerfile, so the file cannot drift from what is tested:
- FROM python:3.11-slim: a fresh venv of this interpreter (3.11), built with uv, stands in for /usr/local;
- WORKDIR and COPY: only the COPYed paths, in order, into a directory that stands for the image's
  filesystem, so the install sees what was COPYed before it and the server what was COPYed at all;
- RUN pip install: the same arguments to `uv pip install`, in the working directory (non-editable);
  RUN useradd and USER: a user of its own, not root (the processes here run as this machine's user),
  its home a directory in the image's filesystem;
- ENV: the image's environment, its absolute paths moved into the image's filesystem;
- no ENTRYPOINT: the chart gives the container args (its template dagster-user-deployments/templates/
  deployment-user.yaml: `dagster api grpc -h 0.0.0.0 -p <port>` and the values' dagsterApiGrpcArgs),
  so they must be the whole command; CMD is that command, for `docker run`.

What the cluster gives the container is mapped onto the machine, and nothing else is added: the values'
env (``run_environment()``), the chart's DAGSTER_HOME and DAGSTER_CURRENT_IMAGE, the Secret
helios-platform with local values (PostgreSQL URLs, read by name when a run starts: loading the code
location connects to nothing), loopback and a free port instead of 0.0.0.0:3030.

The venv downloads about 1.3 GB the first time; later runs reuse it (``tests/harness/venvs.py``),
keyed by the Dockerfile, pyproject.toml and constraints.txt.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from dagster import DagsterInstance
from dagster._core.remote_origin import GrpcServerCodeLocationOrigin
from dagster._core.remote_representation.code_location import GrpcServerCodeLocation

from helios_pipelines.commands.platform import PLATFORM_SECRET, PlatformSettings, helm_values
from tests.harness.serve_harness import free_port, stop
from tests.harness.store_backends import POSTGRES_URL
from tests.harness.venvs import cached_venv

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "pipelines" / "Dockerfile"
CHART_DAGSTER_HOME = "/opt/dagster/dagster_home"  # the chart's default dagsterHome (its shared env)
PIP_ONLY_OPTIONS = {"--no-cache-dir"}  # the image layer's size, not what is installed; uv has no such option


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined and comments dropped."""
    steps, pending = [], ""
    for line in dockerfile.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            keyword, _, arguments = pending.strip().partition(" ")
            steps.append((keyword.upper(), " ".join(arguments.split())))
            pending = ""
    return steps


def chart_command(deployment: dict) -> list[str]:
    """The container args Dagster's chart gives a deployment with dagsterApiGrpcArgs."""
    return ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", str(deployment["port"]), *deployment["dagsterApiGrpcArgs"]]


@dataclass
class Image:
    """An image replayed under ``root``: its ENV has the paths moved under root."""

    root: Path
    venv: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    workdir: Path | None = None
    user: str = "root"
    uid: str | None = None
    home: Path | None = None
    cmd: list[str] | None = None

    def path(self, path_in_image: str) -> Path:
        return self.root / path_in_image.lstrip("/")


def build(dockerfile: Path, root: Path) -> Image:
    built_from = b"".join((REPO / name).read_bytes() for name in ("pyproject.toml", "constraints.txt")) + dockerfile.read_bytes()
    image = Image(root)
    for keyword, arguments in instructions(dockerfile):
        if keyword == "FROM":
            assert arguments == "python:3.11-slim" and sys.version_info[:2] == (3, 11), (arguments, sys.version)
        elif keyword == "WORKDIR":
            image.workdir = image.path(arguments)
            image.workdir.mkdir(parents=True, exist_ok=True)
        elif keyword == "COPY":
            *sources, destination = shlex.split(arguments)
            for source in sources:
                target = image.workdir / destination / (Path(source).name if destination.endswith("/") else "")
                if (REPO / source).is_dir():  # .dockerignore leaves caches out of the build context
                    shutil.copytree(REPO / source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(REPO / source, target)
        elif keyword == "RUN" and arguments.startswith("pip install "):
            install = [arg for arg in shlex.split(arguments.removeprefix("pip install ")) if arg not in PIP_ONLY_OPTIONS]
            image.venv = cached_venv("pipelines-image-venv", built_from, install, cwd=image.workdir)
        elif keyword == "RUN" and arguments.startswith("useradd "):
            words = shlex.split(arguments)
            assert "--create-home" in words and "--uid" in words, arguments  # the USER's home, from /etc/passwd
            image.uid, image.home = words[words.index("--uid") + 1], image.path(f"/home/{words[-1]}")
            image.home.mkdir(parents=True)
        elif keyword == "USER":
            image.user = arguments
        elif keyword == "ENV":
            for assignment in shlex.split(arguments):
                name, _, value = assignment.partition("=")
                image.env[name] = str(image.path(value)) if value.startswith("/") else value
        elif keyword == "CMD":
            image.cmd = json.loads(arguments)
        else:
            raise AssertionError(f"{keyword} {arguments}: a step this test does not replay; teach build() what it does")
    assert image.venv is not None, "no RUN pip install in the Dockerfile"
    return image


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Image:
    return build(DOCKERFILE, tmp_path_factory.mktemp("image"))


def wait_healthy(venv: Path, port: int, server: subprocess.Popen, log: Path, within: float = 300) -> None:
    """Until the chart's readiness probe (`dagster api grpc-health-check -p <port>`) passes."""
    started = time.monotonic()
    while True:
        probe = subprocess.run([str(venv / "bin" / "dagster"), "api", "grpc-health-check", "-p", str(port)],
                               capture_output=True, text=True, timeout=60)
        if probe.returncode == 0:
            return
        assert server.poll() is None, log.read_text()[-4000:]
        assert time.monotonic() - started < within, f"not healthy within {within:.0f} s:\n{log.read_text()[-4000:]}"
        time.sleep(1)


def container_env(image: Image, deployment: dict) -> dict[str, str]:
    """The code location container's environment: the image's, the chart's, the values' and the Secret's."""
    chart = {"DAGSTER_HOME": str(image.path(CHART_DAGSTER_HOME)),
             "DAGSTER_CURRENT_IMAGE": f"{deployment['image']['repository']}:{deployment['image']['tag']}"}
    assert deployment["envSecrets"] == [{"name": PLATFORM_SECRET}]
    secret = {"MLFLOW_TRACKING_URI": POSTGRES_URL, "HELIOS_DATABASE_URL": POSTGRES_URL}
    return {"PATH": f"{image.venv / 'bin'}:/usr/bin:/bin", "HOME": str(image.home),
            **image.env, **chart, **{e["name"]: e["value"] for e in deployment["env"]}, **secret}


@pytest.fixture
def deployment() -> dict:
    settings = PlatformSettings(image="registry.example/helios-pipelines:1.0")
    (deployment,) = helm_values(settings)["dagster-user-deployments"]["deployments"]
    return deployment


def test_the_chart_starts_the_image_as_a_production_code_location_with_helios_jobs(image: Image, deployment, tmp_path):
    command = chart_command(deployment)
    # The chart's args are the whole command only without an ENTRYPOINT; `docker run` starts the same.
    assert image.cmd == command
    assert image.user == image.uid != "0"  # the user created for it, not root
    venv = image.venv
    port = free_port()
    command[command.index("-h") + 1], command[command.index("-p") + 1] = "127.0.0.1", str(port)
    env = container_env(image, deployment)
    dagster = shutil.which(command[0], path=env["PATH"])
    assert dagster == str(venv / "bin" / "dagster")  # on the image's PATH

    log = tmp_path / "grpc.log"
    with log.open("w") as out:
        server = subprocess.Popen([dagster, *command[1:]], cwd=image.workdir, env=env, stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_healthy(venv, port, server, log)
        origin = GrpcServerCodeLocationOrigin(host="127.0.0.1", port=port, location_name="helios")
        with DagsterInstance.ephemeral() as instance, GrpcServerCodeLocation(origin, instance) as location:
            (repository,) = location.get_repositories().values()
            container_image = location.container_image
    finally:
        stop(server)
    # What the webserver and the daemon see: Helios' jobs, assets, a retraining schedule per tenant of
    # configs/tenants (gaming-corp, shopfast), the sensors, and production's resources.
    assert {job.name for job in repository.get_all_jobs()} == {
        "__ASSET_JOB", "tenant_training_job", "tenant_bento_job", "scorecard_job"}
    assert {snap.asset_key.to_user_string() for snap in repository.get_asset_node_snaps()} == {
        "tenant_config", "raw_metrics", "validated_metrics", "features", "forecast_candidates", "champions",
        "anomaly_detector", "capacity_model", "tenant_bento"}
    assert {schedule.name for schedule in repository.get_schedules()} == {"retrain_gaming_corp", "retrain_shopfast"}
    assert {sensor.name for sensor in repository.get_sensors()} == {
        "tenant_registry_sensor", "retraining_need_sensor", "champion_change_sensor", "event_end_sensor"}
    assert repository.get_resource("io_manager").resource_type == "dagster_gcp.gcs.io_manager.GCSPickleIOManager"
    # The Secret's URLs are read by name when a run starts, never shown in the UI.
    assert {"MLFLOW_TRACKING_URI", "HELIOS_DATABASE_URL"} <= set(repository.get_utilized_env_vars())
    # Runs launched from this location (K8sRunLauncher) use the image the chart started it from.
    assert container_image == "registry.example/helios-pipelines:1.0"


def test_the_helios_command_in_the_image_reads_the_tenant_registry_from_any_directory(image: Image, deployment):
    """`kubectl exec` into a pod and `helios validate` from the shell's directory: the command imports the
    packages from the working directory too (the image's PYTHONPATH), beside configs/, not the copy pip
    installed in site-packages, beside which there is no tenant registry."""
    run = subprocess.run([str(image.venv / "bin" / "helios"), "validate"], cwd=image.home,
                         env=container_env(image, deployment), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    assert run.stdout.split() == ["ok", "gaming-corp", "ok", "shopfast"]


def test_a_runs_bento_build_finds_the_service_sources_and_requirements_in_the_image(image: Image, deployment):
    """tenant_bento's step imports serving.packaging (lazily: the code location loads without it) and
    `bentoml build`s with the parent of the imported serving/ as its context, which must hold what the
    build includes and serving/requirements.txt. A run pod imports from the working directory, as here."""
    probe = subprocess.run([str(image.venv / "bin" / "python"), "-c", "from serving.packaging import REPO_ROOT; print(REPO_ROOT)"],
                           cwd=image.workdir, env=container_env(image, deployment), capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr[-3000:]
    context = Path(probe.stdout.strip())
    assert context == image.workdir
    assert (context / "serving" / "requirements.txt").is_file() and (context / "serving" / "service.py").is_file()
