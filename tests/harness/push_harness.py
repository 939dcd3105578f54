"""Real parts for the push tests: the ingest router served by uvicorn in its own process (stoppable
and restartable on one port), a migrated store with push tenants and their keys, a Prometheus that
scrapes a live target and remote-writes it, and remote-write bodies built with the protobuf library
(declared independently of the messages Helios decodes with).

The ingest service is uvicorn over exactly the router the BentoML service mounts; the full
``bentoml serve`` would need a trained bundle per tenant, which the ingest path never uses.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cramjam
import httpx
import yaml
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from helios_pipelines.core.ops import migrations
from helios_pipelines.core.ops.store import Store
from helios_pipelines.core.tenants import TenantConfig
from tests.harness.prometheus_harness import PrometheusServer, _free_port
from tests.harness.store_backends import add_customer

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_SECONDS = 30
# The tenants are read once at start-up, as the service takes them from its bundles.
SERVE_ROUTER = (
    "import os, sys, uvicorn; from fastapi import FastAPI; from serving.ingest import router, serve; "
    "from helios_pipelines.core.tenants import load_tenants; "
    "serve(load_tenants(os.environ['HELIOS_CONFIG_DIR']).tenants.values()); "
    "app = FastAPI(); app.include_router(router); "
    "uvicorn.run(app, host='127.0.0.1', port=int(sys.argv[1]), log_level='warning')"
)


class PushTenants:
    """Tenant files in a registry directory, their customers in a migrated store (SQLite in
    ``directory`` unless ``database_url`` names one), their keys."""

    def __init__(self, directory: Path, tenants: list[TenantConfig], database_url: str | None = None):
        self.config_dir = directory / "tenants"
        self.config_dir.mkdir(parents=True)
        self.database_url = database_url or f"sqlite:///{directory / 'helios.db'}"
        migrations.upgrade(self.database_url)
        store = Store(self.database_url)
        self.keys = {}
        self.tenants = {}
        for tenant in tenants:
            (self.config_dir / f"{tenant.id}.yaml").write_text(yaml.safe_dump(tenant.model_dump(mode="json")))
            self.keys[tenant.id] = add_customer(store, tenant)
            self.tenants[tenant.id] = tenant
        store.close()


class IngestService:
    """uvicorn serving ``serving.ingest.router`` on a fixed loopback port; ``stop``/``start`` again."""

    def __init__(self, tenants: PushTenants, log: Path):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.env = os.environ | {
            "HELIOS_DATABASE_URL": tenants.database_url,
            "HELIOS_CONFIG_DIR": str(tenants.config_dir),
        }
        self._process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        with self.log.open("a") as out:
            self._process = subprocess.Popen(
                [sys.executable, "-c", SERVE_ROUTER, str(self.port)],
                cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while True:
            try:
                if httpx.get(f"{self.url}/ingest/config", timeout=2).status_code == 401:
                    return
            except httpx.TransportError:
                pass
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the ingest service did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGTERM)
            self._process.wait(timeout=20)


# ---- remote-write bodies, built with the protobuf library -----------------------------------------
def _remote_write_classes():
    """WriteRequest and friends from prometheus/prompb/types.proto + remote.proto, declared at runtime."""
    proto = descriptor_pb2.FileDescriptorProto(name="helios_test_prompb.proto", package="helios_test_prompb")
    F = descriptor_pb2.FieldDescriptorProto

    def message(name: str, fields: list[tuple[str, int, int, int, str | None]]) -> None:
        declared = proto.message_type.add(name=name)
        for field_name, number, kind, label, type_name in fields:
            field = declared.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                field.type_name = f".helios_test_prompb.{type_name}"

    message("Label", [("name", 1, F.TYPE_STRING, F.LABEL_OPTIONAL, None), ("value", 2, F.TYPE_STRING, F.LABEL_OPTIONAL, None)])
    message("Sample", [("value", 1, F.TYPE_DOUBLE, F.LABEL_OPTIONAL, None), ("timestamp", 2, F.TYPE_INT64, F.LABEL_OPTIONAL, None)])
    message("TimeSeries", [("labels", 1, F.TYPE_MESSAGE, F.LABEL_REPEATED, "Label"),
                           ("samples", 2, F.TYPE_MESSAGE, F.LABEL_REPEATED, "Sample")])
    message("MetricMetadata", [("type", 1, F.TYPE_INT32, F.LABEL_OPTIONAL, None),
                               ("metric_family_name", 2, F.TYPE_STRING, F.LABEL_OPTIONAL, None)])
    message("WriteRequest", [("timeseries", 1, F.TYPE_MESSAGE, F.LABEL_REPEATED, "TimeSeries"),
                             ("metadata", 3, F.TYPE_MESSAGE, F.LABEL_REPEATED, "MetricMetadata")])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("helios_test_prompb.WriteRequest"))


WriteRequest = _remote_write_classes()
REMOTE_WRITE_HEADERS = {
    "Content-Type": "application/x-protobuf",
    "Content-Encoding": "snappy",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
}


def remote_write_body(series: list[tuple[dict[str, str], list[tuple[int, float]]]], metadata: int = 0) -> bytes:
    """A snappy-compressed WriteRequest: ``[(labels incl. __name__, [(unix ms, value)])]``."""
    request = WriteRequest()
    for labels, samples in series:
        pushed = request.timeseries.add()
        for name, value in sorted(labels.items()):
            pushed.labels.add(name=name, value=value)
        for timestamp, value in samples:
            pushed.samples.add(value=value, timestamp=timestamp)
    for _ in range(metadata):
        request.metadata.add(type=1, metric_family_name="up")
    return bytes(cramjam.snappy.compress_raw(request.SerializeToString()))


# ---- a live scrape target and a Prometheus that remote-writes it ---------------------------------
class ScrapeTarget:
    """An exposition endpoint on loopback; ``render(now_ms) -> text`` draws each scrape's body."""

    def __init__(self, render):
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                body = render(int(time.time() * 1000)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class RemoteWritingPrometheus(PrometheusServer):
    """``prometheus`` scraping ``target`` every second and remote-writing the kept series to ``url``."""

    def __init__(self, workdir: Path, target: str, url: str, bearer: str, keep: list[str]):
        self.tsdb = workdir / "tsdb"
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s"},
            "scrape_configs": [{"job_name": "game", "static_configs": [{"targets": [target]}]}],
            "remote_write": [{
                "url": url,
                "authorization": {"credentials": bearer},
                "queue_config": {"batch_send_deadline": "500ms", "min_backoff": "100ms", "max_backoff": "1s"},
                "write_relabel_configs": [{"source_labels": ["__name__"], "regex": "|".join(keep), "action": "keep"}],
            }],
        }))
        self.log = workdir / "prometheus.log"
        self._process = subprocess.Popen(
            ["prometheus", f"--storage.tsdb.path={self.tsdb}", f"--web.listen-address=127.0.0.1:{self.port}",
             f"--config.file={config}"],
            stdout=subprocess.DEVNULL, stderr=self.log.open("w"),
        )
        self._wait_ready()
