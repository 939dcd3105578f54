"""Serving benchmark: p50/p99 latency and throughput of /predict, /detect and /recommend at
concurrency 1, 8 and 32 against a real `bentoml serve`, and the service's memory.

The load generator is this process (asyncio + httpx), separate from the service's processes. The
tenant's champions must have been packed first (`make demo`, or `helios run <tenant>`).

    python bench/serve_bench.py --tenant gaming-corp --seconds 10 --out bench/results/serve.md
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
BODIES = {
    "gaming-corp": {
        "/predict": {"metric": "concurrent_users", "horizon": 60},
        "/detect": {"metric": "game_latency_p99"},
        "/recommend": {"service": "game-server", "current_replicas": 300},
    },
    "shopfast": {
        "/predict": {"metric": "request_rate", "horizon": 60},
        "/detect": {"metric": "checkout_latency_p99"},
        "/recommend": {"service": "storefront", "current_replicas": 10},
    },
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_rss_mib(pid: int) -> float:
    root = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 2**20


async def load(url: str, body: dict, concurrency: int, seconds: float) -> list[float]:
    """Closed loop: ``concurrency`` clients each send their next request when the last returns."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def worker() -> None:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                response = await client.post(url, json=body)
                response.raise_for_status()
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenant", default="gaming-corp", choices=sorted(BODIES))
    parser.add_argument("--seconds", type=float, default=10.0, help="per endpoint and concurrency level")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "serve.md")
    args = parser.parse_args()

    port = free_port()
    log = open(REPO / "bench" / "out" / "serve_bench_service.log", "w")  # noqa: SIM115 - lives as long as the service
    service = subprocess.Popen(
        [sys.executable, "-m", "bentoml", "serve", "serving.service:HeliosService", "--host", "127.0.0.1",
         "--port", str(port), "--arg", f"tenants={args.tenant}"],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    rows = []
    try:
        for _ in range(240):
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        else:
            raise SystemExit("the service did not become ready; see bench/out/serve_bench_service.log")
        for path, body in BODIES[args.tenant].items():
            asyncio.run(load(base + path, body, 4, 2.0))  # warm caches and connections
            for concurrency in (1, 8, 32):
                latencies = asyncio.run(load(base + path, body, concurrency, args.seconds))
                ordered = sorted(latencies)
                rows.append(
                    (path, concurrency, len(latencies) / args.seconds, 1000 * statistics.median(ordered),
                     1000 * ordered[int(0.99 * (len(ordered) - 1))])
                )
                print(f"{path:11} c={concurrency:<3} {rows[-1][2]:7.1f} req/s  p50 {rows[-1][3]:6.1f} ms  p99 {rows[-1][4]:6.1f} ms")
        rss = service_rss_mib(service.pid)
    finally:
        os.killpg(service.pid, signal.SIGTERM)
        service.wait(timeout=30)
    lines = [
        "# Serving benchmark",
        "",
        f"`python bench/serve_bench.py --tenant {args.tenant} --seconds {args.seconds:g}` (`make bench-serve`): a real",
        "`bentoml serve` of the tenant's packed champions (one worker), loaded by a separate asyncio/httpx",
        f"process in a closed loop for {args.seconds:g} s per endpoint and concurrency, after a 2 s warm-up,",
        f"on this 2-core machine. Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "| endpoint | concurrency | requests/s | p50 ms | p99 ms |",
        "|---|---|---|---|---|",
        *[f"| {p} | {c} | {rps:.0f} | {p50:.1f} | {p99:.1f} |" for p, c, rps, p50, p99 in rows],
        "",
        f"Service memory (RSS of the BentoML process tree, after the run): **{rss:.0f} MiB**.",
        "",
        "Targets: /predict and /recommend p99 <= 25 ms at concurrency 8; >= 300 requests/s; one tenant's",
        "service under 600 MiB. Forecasts and the latest detector scores are computed once per step and",
        "cached, so a request mostly costs BentoML's own HTTP and validation path.",
    ]
    args.out.write_text("\n".join(lines) + "\n")
    print(f"RSS {rss:.0f} MiB; written to {args.out}")


if __name__ == "__main__":
    main()
