"""`dagster dev` (webserver and daemon) run from Python, for the backfill test and the scale bench:
start it on a free loopback port with its own DAGSTER_HOME, talk GraphQL to it, stop it.

Started from ``subprocess`` in a session of its own, so SIGTERM reaches the webserver, the daemon, the
code server and the run workers (started with ``&`` from a shell it ignores SIGTERM).
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
LAUNCH_BACKFILL = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on Error { message }
  }
}"""
BACKFILL_STATUS = """
query Backfill($backfill: String!) {
  partitionBackfillOrError(backfillId: $backfill) {
    ... on PartitionBackfill { status }
  }
  runsOrError(filter: {tags: [{key: "dagster/backfill", value: $backfill}]}) {
    ... on Runs { results { runId status startTime endTime tags { key value } } }
  }
}"""
RUN_FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}
BACKFILL_FINISHED = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_instance_config(dagster_home: Path, max_concurrent_runs: int) -> None:
    """A local instance (SQLite) whose run queue runs ``max_concurrent_runs`` at a time."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    (dagster_home / "dagster.yaml").write_text(
        "telemetry: {enabled: false}\n"
        "run_coordinator:\n  module: dagster._core.run_coordinator\n  class: QueuedRunCoordinator\n"
        f"  config: {{max_concurrent_runs: {max_concurrent_runs}}}\n"
    )


class DagsterDev:
    def __init__(self, env: dict[str, str], log_path: Path, startup_timeout_s: float = 120):
        self.env = env
        self.log_path = log_path
        self.startup_timeout_s = startup_timeout_s
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/graphql"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "DagsterDev":
        self._log = self.log_path.open("w")
        dagster = Path(sys.executable).with_name("dagster")
        self.process = subprocess.Popen(
            [str(dagster), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(self.port)],
            cwd=REPO, env=self.env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            self._wait_until_answering()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_until_answering(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"dagster dev exited: {self.log_tail()}")
            try:
                if httpx.post(self.url, json={"query": "{ version }"}, timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"dagster dev did not answer within {self.startup_timeout_s} s")
            time.sleep(1)

    def __exit__(self, *exc) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self._log.close()

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text()[-chars:]

    def graphql(self, query: str, variables: dict) -> dict:
        response = httpx.post(self.url, json={"query": query, "variables": variables}, timeout=60)
        response.raise_for_status()
        body = response.json()
        if "errors" in body:
            raise RuntimeError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    def launch_backfill(self, params: dict) -> str:
        launched = self.graphql(LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
        if launched["__typename"] != "LaunchBackfillSuccess":
            raise RuntimeError(f"backfill not launched: {launched}")
        return launched["backfillId"]

    def wait_for_backfill(self, backfill_id: str, timeout_s: float, poll_s: float = 3) -> tuple[str, list[dict]]:
        """(backfill status, its runs) once the backfill and every run it launched have finished."""
        deadline = time.monotonic() + timeout_s
        while True:
            data = self.graphql(BACKFILL_STATUS, {"backfill": backfill_id})
            status = data["partitionBackfillOrError"]["status"]
            runs = data["runsOrError"]["results"]
            if status in BACKFILL_FINISHED and all(r["status"] in RUN_FINISHED for r in runs):
                return status, runs
            if time.monotonic() > deadline:
                raise TimeoutError(f"backfill {backfill_id} is {status} after {timeout_s} s; runs: {runs}")
            time.sleep(poll_s)
