"""Soak: a multi-tenant `bentoml serve` of both demo tenants with API keys, under mixed load at
concurrency 16 for 10 minutes with malformed and hostile requests mixed in (issue 13). Passes when no
request is answered 5xx (nor left without an answer) and the service's RSS stays flat within 10 %
(the mean of the last minute against the mean of the first minute after warm-up).

The demo tenants' champions must have been packed first (`make demo` or `helios run gaming-corp
shopfast --no-bento`); their keys are issued in the Helios store here (`helios tenants sync` first).

    python bench/soak.py --minutes 10 --concurrency 16 --out bench/results/soak.md
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_bench import free_port, service_rss_mib  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TENANTS = {
    "gaming-corp": {"metric": "concurrent_users", "detect": "game_latency_p99", "service": "game-server"},
    "shopfast": {"metric": "request_rate", "detect": "checkout_latency_p99", "service": "storefront"},
}
WARM_UP_SECONDS = 30
RSS_EVERY_SECONDS = 5
RSS_TOLERANCE = 0.10


def requests_for(tenant: str, key: str, other: str) -> list[tuple[str, str, dict, bool]]:
    """(name, method, httpx arguments, malformed?) for one tenant's key."""
    names = TENANTS[tenant]
    auth = {"X-API-Key": key}
    selector = f'helios_forecast_value{{customer="{tenant}", metric="{names["metric"]}", horizon="1h"}}'
    far = "3000-01-01T00:00:00Z"
    return [
        ("predict", "POST", {"url": "/predict", "json": {"metric": names["metric"], "horizon": 60}, "headers": auth}, False),
        ("predict GET", "GET", {"url": "/predict", "params": {"metric": names["metric"], "horizon": 15}, "headers": auth}, False),
        ("detect", "POST", {"url": "/detect", "json": {"metric": names["detect"]}, "headers": auth}, False),
        ("recommend", "POST", {"url": "/recommend", "json": {"service": names["service"], "current_replicas": 10},
                               "headers": auth}, False),
        ("query", "GET", {"url": "/api/v1/query", "params": {"query": selector}, "headers": auth}, False),
        ("metrics", "GET", {"url": "/metrics", "headers": auth}, False),
        # malformed and hostile
        ("bad horizon type", "POST", {"url": "/predict", "json": {"metric": names["metric"], "horizon": True}, "headers": auth}, True),
        ("huge horizon", "POST", {"url": "/predict", "json": {"metric": names["metric"], "horizon": 10**18}, "headers": auth}, True),
        ("not json", "POST", {"url": "/predict", "content": b"{not json", "headers": auth | {"Content-Type": "application/json"}}, True),
        ("nested", "POST", {"url": "/detect", "content": b"[" * 50_000, "headers": auth | {"Content-Type": "application/json"}}, True),
        ("oversized", "POST", {"url": "/detect", "content": b" " * 300_000, "headers": auth | {"Content-Type": "application/json"}}, True),
        ("multipart", "POST", {"url": "/detect", "content": b"{}", "headers": auth | {"Content-Type": "multipart/form-data"}}, True),
        ("far point", "POST", {"url": "/detect", "json": {"metric": names["detect"], "points": [{"timestamp": far, "value": 1}]},
                               "headers": auth}, True),
        ("many metrics", "POST", {"url": "/detect", "json": {"metrics": [f"m{i}" for i in range(5000)]}, "headers": auth}, True),
        ("bad event", "POST", {"url": "/events", "json": {"name": "x", "start": "2026-12-01T00:00:00Z", "duration_hours": 1e300,
                                                           "multiplier": 2}, "headers": auth}, True),
        ("other tenant", "POST", {"url": "/predict", "json": {"metric": names["metric"], "horizon": 60, "tenant": other},
                                  "headers": auth}, True),
        ("other selector", "GET", {"url": "/api/v1/query", "params": {"query": selector.replace(tenant, other)},
                                   "headers": auth}, True),
        ("nan time", "GET", {"url": "/api/v1/query", "params": {"query": selector, "time": "nan"}, "headers": auth}, True),
        ("no key", "POST", {"url": "/predict", "json": {"metric": names["metric"], "horizon": 60}}, True),
        ("wrong key", "GET", {"url": "/metrics", "headers": {"X-API-Key": "hel_nope_nope"}}, True),
        ("long key", "GET", {"url": "/metrics", "headers": {"X-API-Key": "hel_" + "k" * 4000}}, True),
    ]


async def worker(client: httpx.AsyncClient, mix: list, deadline: float, rng: random.Random, results: list) -> None:
    while time.monotonic() < deadline:
        name, method, args, malformed = rng.choice(mix)
        started = time.monotonic()
        try:
            response = await client.request(method, **args)
            status = response.status_code
        except httpx.HTTPError as exc:  # no answer at all: counted as a failure like a 5xx
            status = f"no answer ({type(exc).__name__})"
        results.append((name, malformed, status, time.monotonic() - started))


async def load(base: str, mix: list, seconds: float, concurrency: int, seed: int) -> list:
    results: list = []
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:
        await asyncio.gather(*[worker(client, mix, deadline, random.Random(seed + i), results) for i in range(concurrency)])
    return results


async def sample_rss(pid: int, seconds: float, samples: list) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        samples.append((time.monotonic(), service_rss_mib(pid)))
        await asyncio.sleep(RSS_EVERY_SECONDS)


def issue_keys() -> dict[str, str]:
    from helios_pipelines.core.ops.store import Store

    store = Store()
    return {tenant: store.rotate_key(tenant) for tenant in TENANTS}


def wait_ready(base: str, key: str) -> None:
    for _ in range(480):
        try:
            if (httpx.get(f"{base}/readyz", timeout=2).status_code == 200
                    and httpx.get(f"{base}/metrics", headers={"X-API-Key": key}, timeout=30).status_code == 200):
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit("the service did not become ready; see bench/out/soak_service.log")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")


def report(args, results: list, rss: list, started: str, loads: list[float]) -> tuple[str, bool]:
    statuses = Counter(r[2] for r in results)
    failures = sum(n for s, n in statuses.items() if not isinstance(s, int) or s >= 500)
    steady = [r for t, r in rss if t - rss[0][0] >= WARM_UP_SECONDS]
    per_minute = max(1, int(60 / RSS_EVERY_SECONDS))
    first, last = steady[:per_minute], steady[-per_minute:]
    first_mean, last_mean = sum(first) / len(first), sum(last) / len(last)
    growth = last_mean / first_mean - 1
    passed = failures == 0 and abs(growth) <= RSS_TOLERANCE
    by_name: dict[str, list] = defaultdict(list)
    for name, malformed, status, seconds in results:
        by_name[name].append((malformed, status, seconds))
    rows = []
    for name, entries in by_name.items():
        codes = Counter(s for _, s, _ in entries)
        rows.append(f"| {name} | {'malformed' if entries[0][0] else 'valid'} | {len(entries)} | "
                    f"{', '.join(f'{c}: {n}' for c, n in sorted(codes.items(), key=str))} | "
                    f"{percentile([s for _, _, s in entries], 0.5):.0f} | {percentile([s for _, _, s in entries], 0.99):.0f} |")
    seconds = args.minutes * 60
    text = "\n".join([
        "# Soak: mixed load with malformed requests on both demo tenants",
        "",
        f"`python bench/soak.py --minutes {args.minutes:g} --concurrency {args.concurrency}` (`make bench-soak`), started {started}:",
        "a multi-tenant `bentoml serve` of gaming-corp and shopfast with API keys (one worker), loaded by",
        f"{args.concurrency} concurrent keep-alive clients (httpx, asyncio, one process) for {seconds:.0f} s, each request drawn",
        "at random (seeded) from both tenants' valid requests and malformed or hostile ones (wrong types,",
        "overflowing horizons, bad JSON, 50k nested brackets, 300 KB bodies, far-future points, 5,000 metric names,",
        "a poisoning event, another tenant's name or selector, no key, a wrong or 4 KB key).",
        "",
        f"**{'PASS' if passed else 'FAIL'}**: {len(results)} requests ({len(results) / seconds:.0f}/s), "
        f"**{failures} answered 5xx or not at all**; service RSS {first_mean:.0f} MiB in the first minute after a "
        f"{WARM_UP_SECONDS} s warm-up, {last_mean:.0f} MiB in the last ({growth:+.1%}; limit ±{RSS_TOLERANCE:.0%}), "
        f"peak {max(r for _, r in rss):.0f} MiB.",
        "",
        "| request | kind | count | statuses | p50 ms | p99 ms |",
        "|---|---|---|---|---|---|",
        *sorted(rows),
        "",
        f"Machine: {os.cpu_count()} cores shared with other engineers' work; 1-minute load average during the run "
        f"{min(loads):.1f}-{max(loads):.1f}. Latencies are noisy and say little here; the soak's figures are the",
        "5xx count and the RSS trend.",
    ]) + "\n"
    return text, passed


async def run(args, base: str, pid: int, mix: list) -> tuple[list, list, list[float]]:
    seconds = args.minutes * 60
    rss, loads = [], []

    async def watch_load():
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            loads.append(os.getloadavg()[0])
            await asyncio.sleep(10)

    results, _, _ = await asyncio.gather(load(base, mix, seconds, args.concurrency, args.seed),
                                         sample_rss(pid, seconds, rss), watch_load())
    return results, rss, loads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "soak.md")
    args = parser.parse_args()
    keys = issue_keys()
    mix = [entry for tenant, key in keys.items()
           for entry in requests_for(tenant, key, next(t for t in TENANTS if t != tenant))]
    port = free_port()
    (REPO / "bench" / "out").mkdir(exist_ok=True)
    log = open(REPO / "bench" / "out" / "soak_service.log", "w")  # noqa: SIM115 - lives as long as the service
    service = subprocess.Popen(
        [sys.executable, "-m", "bentoml", "serve", "serving.service:HeliosService", "--host", "127.0.0.1",
         "--port", str(port), "--arg", f"tenants={','.join(TENANTS)}", "--arg", "api_keys=true"],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, next(iter(keys.values())))
        started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        results, rss, loads = asyncio.run(run(args, base, service.pid, mix))
    finally:
        os.killpg(service.pid, signal.SIGTERM)
        service.wait(timeout=60)
    text, passed = report(args, results, rss, started, loads)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    raise SystemExit(0 if passed else 1)


if __name__ == "__main__":
    main()
