"""Serving benchmark: p50/p99 latency and throughput of /predict, /detect and /recommend at
concurrency 1, 8 and 32 against a real `bentoml serve`, and the service's memory.

The load generator is `wrk` (a compiled, closed-loop generator; `bash scripts/debian_package.sh
install wrk` installs it), one thread, so it takes a small share of the machine the service runs on. The tenant's champions must
have been packed first (`make demo`, or `helios run <tenant>`).

    python bench/serve_bench.py --tenant gaming-corp --seconds 10 --out bench/results/serve.md
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
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
CONCURRENCY = (1, 8, 32)
WARM_UP_SECONDS = 2
UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}


@dataclass
class Run:
    path: str
    concurrency: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    load_average: float  # the machine's 1-minute load average right after the run
    new_step: bool  # a step boundary passed during the run: its first requests recomputed the forecasts


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_rss_mib(pid: int) -> float:
    root = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 2**20


def post_script(body: dict, directory: Path) -> Path:
    """wrk sends GETs unless a Lua script sets the method, headers and body."""
    script = directory / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = [==[{json.dumps(body)}]==]\n"
    )
    return script


def latency_ms(text: str, percentile: str) -> float:
    match = re.search(rf"^\s*{percentile}%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.MULTILINE)
    if match is None:
        raise ValueError(f"no {percentile}% latency in wrk's output:\n{text}")
    return float(match.group(1)) * UNIT_MS[match.group(2)]


def parse_wrk(text: str) -> tuple[float, float, float]:
    """Requests/s, p50 and p99 (ms) from `wrk --latency`; any failed request fails the benchmark,
    since a fast error is not a served answer."""
    failures = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if failures:
        raise SystemExit(f"{failures.group(1)} requests were answered with an error:\n{text}")
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if sockets and any(int(n) for n in sockets.groups()):
        raise SystemExit(f"wrk saw socket errors:\n{text}")
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.MULTILINE)
    if rate is None:
        raise ValueError(f"no Requests/sec in wrk's output:\n{text}")
    return float(rate.group(1)), latency_ms(text, "50"), latency_ms(text, "99")


def wrk(url: str, script: Path, concurrency: int, seconds: int) -> str:
    command = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "10s", "--latency", "-s", str(script), url]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wait_settled(base: str) -> None:
    """Ready, and the first publish done: the start-up catch-up (the step's forecasts, an hour of
    scheduled detection) is not what the benchmark measures."""
    for _ in range(240):
        try:
            if (httpx.get(f"{base}/readyz", timeout=2).status_code == 200
                    and "helios_forecast_value{" in httpx.get(f"{base}/metrics", timeout=5).text):
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit("the service did not become ready; see bench/out/serve_bench_service.log")


def forecast_origin(base: str, body: dict) -> str:
    """The step the service answers from (the forecast's origin)."""
    response = httpx.post(f"{base}/predict", json=body, timeout=30)
    response.raise_for_status()
    return response.json()["origin"]


def report(args, rows: list[Run], rss: float, wrk_cpu_share: float) -> str:
    loads = [r.load_average for r in rows]
    return "\n".join([
        "# Serving benchmark",
        "",
        f"`python bench/serve_bench.py --tenant {args.tenant} --seconds {args.seconds}` (`make bench-serve`): a real",
        "`bentoml serve` of the tenant's packed champions (one worker), loaded by `wrk --latency` (one",
        f"thread, closed loop, a Lua script posting the JSON body) for {args.seconds} s per endpoint and",
        f"concurrency, after a {WARM_UP_SECONDS} s warm-up, on this {os.cpu_count()}-core machine."
        f" Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "| endpoint | concurrency | requests/s | p50 ms | p99 ms | load average | new step during the run |",
        "|---|---|---|---|---|---|---|",
        *[f"| {r.path} | {r.concurrency} | {r.requests_per_s:.0f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.load_average:.1f} |"
          f" {'yes' if r.new_step else ''} |" for r in rows],
        "",
        f"Service memory (RSS of the BentoML process tree, after the run): **{rss:.0f} MiB**.",
        f"wrk itself used {wrk_cpu_share:.0%} of one core while loading; the machine's 1-minute load average",
        f"(which counts the service and wrk) ranged {min(loads):.1f}-{max(loads):.1f} over the run.",
        "",
        "wrk's p99 corrects for coordinated omission: a stall of the service counts for every request a",
        "client sending at the measured rate would have sent during it, not only the few in flight.",
        "",
        "Targets: /predict and /recommend p99 <= 25 ms at concurrency 8; >= 300 requests/s; one tenant's",
        "service under 600 MiB.",
    ]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenant", default="gaming-corp", choices=sorted(BODIES))
    parser.add_argument("--seconds", type=int, default=10, help="per endpoint and concurrency level")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "serve.md")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: bash scripts/debian_package.sh install wrk")

    port = free_port()
    (REPO / "bench" / "out").mkdir(exist_ok=True)
    log = open(REPO / "bench" / "out" / "serve_bench_service.log", "w")  # noqa: SIM115 - lives as long as the service
    service = subprocess.Popen(
        [sys.executable, "-m", "bentoml", "serve", "serving.service:HeliosService", "--host", "127.0.0.1",
         "--port", str(port), "--arg", f"tenants={args.tenant}"],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    rows: list[Run] = []
    wrk_cpu = 0.0
    try:
        wait_settled(base)
        predict_body = BODIES[args.tenant]["/predict"]
        with tempfile.TemporaryDirectory() as scratch:
            for path, body in BODIES[args.tenant].items():
                httpx.post(base + path, json=body, timeout=30).raise_for_status()  # a wrong body fails here, loudly
                script = post_script(body, Path(scratch))
                wrk(base + path, script, 4, WARM_UP_SECONDS)  # warm caches and connections
                for concurrency in CONCURRENCY:
                    origin = forecast_origin(base, predict_body)
                    cpu_before = children_cpu_seconds()
                    rate, p50, p99 = parse_wrk(wrk(base + path, script, concurrency, args.seconds))
                    wrk_cpu += children_cpu_seconds() - cpu_before
                    new_step = forecast_origin(base, predict_body) != origin
                    rows.append(Run(path, concurrency, rate, p50, p99, os.getloadavg()[0], new_step))
                    print(f"{path:11} c={concurrency:<3} {rate:7.1f} req/s  p50 {p50:6.1f} ms  p99 {p99:6.1f} ms"
                          f"  load {rows[-1].load_average:.1f}{'  new step' if new_step else ''}", flush=True)
        rss = service_rss_mib(service.pid)
    finally:
        os.killpg(service.pid, signal.SIGTERM)
        service.wait(timeout=30)
    args.out.write_text(report(args, rows, rss, wrk_cpu / (args.seconds * len(rows))))
    print(f"RSS {rss:.0f} MiB; written to {args.out}")


if __name__ == "__main__":
    main()
