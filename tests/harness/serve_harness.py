"""Starting a Helios service process for a test: a free port, wait for /readyz, stop the whole group."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running(command: list[str], port: int, log: Path, env: dict | None = None, cwd: Path = REPO,
            ready_within: float = 120) -> Iterator[httpx.Client]:
    """Run ``command`` (which serves on ``port``) until /readyz answers 200; yields a client of it."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=cwd, env=os.environ.copy() if env is None else env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_within
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{' '.join(command[:4])} did not become ready:\n{log.read_text()[-4000:]}")
            time.sleep(0.5)
        with httpx.Client(base_url=base, timeout=30) as client:
            yield client
    finally:
        stop(process)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM to the process group (a server that already died is fine), SIGKILL if it lingers."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


@contextmanager
def bentoml_serve(log_dir: Path, *args: str, env: dict | None = None,
                  service: str = "serving.service:HeliosService") -> Iterator[httpx.Client]:
    """`bentoml serve` of the Helios service (or another ``service``) from the repository on a free
    port; yields an HTTP client."""
    port = free_port()
    command = [sys.executable, "-m", "bentoml", "serve", service,
               "--host", "127.0.0.1", "--port", str(port), *args]
    with running(command, port, log_dir / "bentoml.log", env) as client:
        yield client
