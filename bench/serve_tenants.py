"""The multi-tenant service's memory with N tenants loaded (issue #20.4: 50 tenants under 2 GiB).

N copies of one trained tenant's packed champions (``helios-<tenant>:latest``, from `make demo` or
`helios run <tenant>`), each a tenant of its own: its own id, simulator seed (so its own history and
answers) and API key, registered as the BentoML model ``helios-<id>`` in a scratch BentoML store and
as a customer in a scratch embedded store. One real `bentoml serve serving.service:HeliosService`
with ``--arg tenants=<all N> --arg api_keys=true`` (the multi-tenant mode) then loads them all; every
tenant is asked /predict, /detect, /recommend and /metrics with its key, so each has its history,
forecasts, scores and series in memory, and the service is watched ``--watch-seconds`` more while a
client keeps asking every tenant in turn (its publisher refreshing each tenant's step meanwhile).

Memory is the resident set (VmRSS) of the service's process tree, as bench/serve_bench.py measures it:
`bentoml serve`'s arbiter (which only supervises) plus its one worker (which holds the tenants), each
also reported on its own, with the worker's proportional set size (PSS, shared library pages split
between the processes that map them).

    python bench/serve_tenants.py --tenant shopfast --tenants 50 --out bench/results/serve_tenants.md
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_notes import kept_notes  # noqa: E402
from serve_bench import free_port, uptime  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BODIES = {
    "shopfast": {"/predict": {"metric": "request_rate", "horizon": 60}, "/detect": {},
                 "/recommend": {"service": "storefront", "current_replicas": 10}},
    "gaming-corp": {"/predict": {"metric": "concurrent_users", "horizon": 60}, "/detect": {},
                    "/recommend": {"service": "game-server", "current_replicas": 300}},
}
TARGET_MIB = 2048  # issue #20.4: the multi-tenant service with 50 tenants loaded
MIB = 2**20


def copy_tenants(tenant: str, count: int, bentoml_home: Path) -> dict:
    """``count`` copies of ``tenant``'s packed bundle as models ``helios-<id>`` in a new BentoML store
    at ``bentoml_home``; their tenant configs by id."""
    from helios_pipelines.core.settings import helios_home
    from helios_pipelines.core.tenants import TenantConfig
    from serving.bundle import MANIFEST

    models = Path(os.environ.get("BENTOML_HOME", helios_home() / "bentoml")) / "models" / f"helios-{tenant}"
    if not (models / "latest").exists():
        raise SystemExit(f"no packed champions for {tenant} under {models}: run `helios run {tenant}` first")
    original = models / (models / "latest").read_text().strip()
    manifest = json.loads((original / MANIFEST).read_text())
    os.environ["BENTOML_HOME"] = str(bentoml_home)  # before BentoML is imported: it fixes its store then
    import bentoml

    configs = {}
    for i in range(count):
        tenant_id = f"{tenant}-{i:03d}"
        config = manifest["tenant"] | {"id": tenant_id, "name": f"{manifest['tenant']['name']} copy {i}",
                                       "source": manifest["tenant"]["source"] | {"seed": 1000 + i}}
        configs[tenant_id] = TenantConfig.model_validate(config)
        with bentoml.models.create(f"helios-{tenant_id}:copy", labels={"tenant": tenant_id, "owner": "helios"}) as model:
            shutil.copytree(original, model.path, dirs_exist_ok=True, ignore=shutil.ignore_patterns("model.yaml", MANIFEST))
            (Path(model.path) / MANIFEST).write_text(json.dumps(manifest | {"tenant": config}, indent=2, sort_keys=True))
    return configs


def issue_keys(configs: dict) -> dict[str, str]:
    """Each copy a customer of the embedded store under HELIOS_HOME, with an API key."""
    from helios_pipelines.core.ops.migrations import upgrade
    from helios_pipelines.core.ops.store import Store
    from helios_pipelines.core.tenants import TenantRegistry

    store = Store()
    upgrade(store.url)
    store.sync_customers(TenantRegistry(configs, []))
    keys = {tenant_id: store.rotate_key(tenant_id) for tenant_id in configs}
    store.close()
    return keys


class TreeMemory:
    """VmRSS of a process and its descendants, by role, sampled until stopped; the peak of the sum."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def now(self) -> dict[str, float]:
        sizes = {"arbiter": self.root.memory_info().rss / MIB, "worker": 0.0, "worker PSS": 0.0}
        for child in self.root.children(recursive=True):
            sizes["worker"] += child.memory_info().rss / MIB
            sizes["worker PSS"] += child.memory_full_info().pss / MIB
        sizes["total"] = sizes["arbiter"] + sizes["worker"]
        return sizes

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.now()["total"])
            self._stop.wait(1.0)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def ask_every_tenant(base: str, bodies: dict, keys: dict[str, str]) -> float:
    """Each tenant's /predict, /detect, /recommend and /metrics once; the seconds it took."""
    started = time.monotonic()
    with httpx.Client(base_url=base, timeout=600) as client:
        for tenant_id, key in keys.items():
            headers = {"X-API-Key": key}
            for path, body in bodies.items():
                response = client.post(path, json=body, headers=headers)
                if response.status_code != 200 or response.json().get("tenant") != tenant_id:
                    raise SystemExit(f"{tenant_id} {path}: {response.status_code} {response.text[:300]}")
            metrics = client.get("/metrics", headers=headers)
            if metrics.status_code != 200 or f'customer="{tenant_id}"' not in metrics.text:
                raise SystemExit(f"{tenant_id} /metrics: {metrics.status_code} {metrics.text[:300]}")
    return time.monotonic() - started


def wait_ready(base: str, process: subprocess.Popen) -> None:
    for _ in range(1200):
        if process.poll() is not None:
            raise SystemExit("the service exited; see bench/out/serve_tenants.log")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit("the service did not become ready; see bench/out/serve_tenants.log")


def report(args, loaded: dict, answered: dict, end: dict, peak: float, seconds: dict, uptimes: tuple[str, str],
           rounds: int) -> str:
    verdict = "met" if peak <= TARGET_MIB else "NOT met"
    rows = [f"| {stage} | {m['arbiter']:.0f} | {m['worker']:.0f} | {m['worker PSS']:.0f} | **{m['total']:.0f}** |"
            for stage, m in [("all tenants loaded (service ready)", loaded),
                             ("every tenant answered once", answered),
                             (f"after {args.watch_seconds} s more of requests", end)]]
    return "\n".join([
        f"# Multi-tenant service memory: {args.tenants} tenants",
        "",
        f"`python bench/serve_tenants.py --tenant {args.tenant} --tenants {args.tenants} --watch-seconds"
        f" {args.watch_seconds}` (`make bench-serve-tenants`), measured"
        f" {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on this {os.cpu_count()}-core machine.",
        "",
        f"{args.tenants} copies of {args.tenant}'s packed champions, each its own tenant (id, simulator seed,",
        "API key), served by one `bentoml serve serving.service:HeliosService --arg tenants=<all> --arg api_keys=true`",
        "(one worker). Every tenant was asked /predict, /detect, /recommend and /metrics with its key"
        f" ({seconds['answered']:.0f} s for all), then every tenant again in turn for {args.watch_seconds} s"
        f" ({rounds} rounds) while the publisher refreshed their steps.",
        "",
        f"**Machine load:** `uptime` before: `{uptimes[0]}`; after: `{uptimes[1]}`.",
        "",
        "| when | arbiter RSS MiB | worker RSS MiB | worker PSS MiB | service RSS MiB |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"Peak service RSS over the run (sampled every second): **{peak:.0f} MiB** ({peak / args.tenants:.1f} MiB per tenant"
        f" all in); target under {TARGET_MIB} MiB with 50 tenants: **{verdict}**. Start-up (loading {args.tenants}"
        f" bundles) took {seconds['ready']:.0f} s.",
        "",
        "The service RSS is what bench/serve_bench.py reports per tenant service: the VmRSS of `bentoml serve`'s",
        "arbiter plus its worker. PSS splits the pages of shared libraries between the processes that map them.",
        "",
    ]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenant", default="shopfast", choices=sorted(BODIES), help="the trained tenant to copy")
    parser.add_argument("--tenants", type=int, default=50)
    parser.add_argument("--watch-seconds", type=int, default=120)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "serve_tenants.md")
    args = parser.parse_args()
    (REPO / "bench" / "out").mkdir(exist_ok=True)
    uptime_before = uptime()
    with tempfile.TemporaryDirectory(prefix="helios-tenants-") as scratch:
        home = Path(scratch) / "home"
        os.environ["HELIOS_HOME"] = str(home)
        os.environ.pop("HELIOS_DATABASE_URL", None)  # the scratch embedded store, not a shared one
        configs = copy_tenants(args.tenant, args.tenants, Path(scratch) / "bentoml")
        keys = issue_keys(configs)
        port = free_port()
        log = open(REPO / "bench" / "out" / "serve_tenants.log", "w")  # noqa: SIM115 - lives as long as the service
        started = time.monotonic()
        service = subprocess.Popen(
            [sys.executable, "-m", "bentoml", "serve", "serving.service:HeliosService", "--host", "127.0.0.1",
             "--port", str(port), "--arg", f"tenants={','.join(configs)}", "--arg", "api_keys=true"],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=os.environ.copy())
        base = f"http://127.0.0.1:{port}"
        seconds = {}
        try:
            with TreeMemory(service.pid) as memory:
                wait_ready(base, service)
                seconds["ready"] = time.monotonic() - started
                loaded = memory.now()
                print(f"ready after {seconds['ready']:.0f} s: {loaded}", flush=True)
                seconds["answered"] = ask_every_tenant(base, BODIES[args.tenant], keys)
                answered = memory.now()
                print(f"every tenant answered in {seconds['answered']:.0f} s: {answered}", flush=True)
                deadline, rounds = time.monotonic() + args.watch_seconds, 0
                while time.monotonic() < deadline:
                    ask_every_tenant(base, BODIES[args.tenant], keys)
                    rounds += 1
                end = memory.now()
                print(f"after {rounds} more rounds: {end}; peak {memory.peak:.0f} MiB", flush=True)
        finally:
            os.killpg(service.pid, signal.SIGTERM)
            service.wait(timeout=60)
    text = report(args, loaded, answered, end, memory.peak, seconds, (uptime_before, uptime()), rounds)
    args.out.write_text(text + "\n" + kept_notes(args.out))
    print(text)


if __name__ == "__main__":
    main()
