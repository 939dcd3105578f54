"""HeliosAgent: forwards a customer's Prometheus metrics to Helios, for Helios instances that cannot
reach that Prometheus (the integration guide's agent option).

1. ``discover_prometheus(url)`` finds which of the tenant's metrics (asked from Helios, or given) the
   local Prometheus holds.
2. ``start()`` first sends the tenant's training window (``history_days`` from Helios, or
   ``backfill_days``), so a new tenant can train today instead of after two weeks of forwarding, then
   forwards new samples every interval. ``backfill(days)`` sends history on its own.

What is sent is each metric's value on the tenant's grid (Helios' ``step``), every label set apart,
counters cumulative: exactly what Helios trains on, at a fraction of the raw samples. Collection
stops ``settle_seconds`` short of now so late scrapes are not missed.

Batches go to a disk spool first and leave it only when Helios answered 2xx; while Helios is down they
pile up (``max_spool_bytes``, after which collection pauses and Prometheus itself keeps the data until
the agent catches up from its high-water marks) and drain oldest first when it is back. 5xx, 429 and
network errors are retried with exponential backoff; another 4xx means the batch itself is wrong, so
it is set aside under ``spool/rejected`` with the reason logged, and the queue moves on.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import httpx
import tenacity

from helios_sdk.prometheus import PrometheusReader
from helios_sdk.spool import HighWaterMarks, Spool

log = logging.getLogger("helios_sdk")

USER_AGENT = "helios-agent/0.1"
RETRIABLE = {408, 429}
MAX_BACKOFF_SECONDS = 30.0


class HeliosError(RuntimeError):
    """Helios refused or could not be reached; the message says which and why."""


class HeliosAgent:
    def __init__(
        self,
        api_key: str,
        endpoint: str,
        customer_id: str,
        prometheus_url: str | None = None,
        metrics: list[str] | None = None,
        *,
        step_seconds: int | None = None,
        data_dir: str | Path | None = None,
        interval_seconds: float = 60.0,
        batch_size: int = 5000,
        retries: int = 4,
        backoff_seconds: float = 0.5,
        timeout_seconds: float = 10.0,
        settle_seconds: float = 15.0,
        max_spool_bytes: int = 512 * 1024 * 1024,
        backfill_days: float | None = None,
        clock=time.time,
    ):
        """``metrics`` (series names), ``step_seconds`` and ``backfill_days`` (what ``start()`` sends
        before streaming) default to what Helios says the tenant configures; ``clock`` returns unix
        seconds (tests replay history with it)."""
        self.customer_id = customer_id
        self.endpoint = endpoint.rstrip("/")
        self.metrics = list(metrics) if metrics else None
        self.step_seconds = step_seconds
        self.interval_seconds = interval_seconds
        self.batch_size = batch_size
        self.retries = retries
        self.backoff_seconds = backoff_seconds
        self.settle_seconds = settle_seconds
        self.max_spool_bytes = max_spool_bytes
        self.backfill_days = backfill_days
        self._backfilled = False
        self.clock = clock
        directory = Path(data_dir) if data_dir else Path.home() / ".helios-agent" / customer_id
        self.spool = Spool(directory / "spool")
        self.marks = HighWaterMarks(directory / "state.json")
        self.prometheus = PrometheusReader(prometheus_url) if prometheus_url else None
        self._helios = httpx.Client(
            base_url=self.endpoint,
            timeout=timeout_seconds,
            headers={"X-API-Key": api_key, "X-Helios-Customer": customer_id, "User-Agent": USER_AGENT},
        )
        self._config: dict | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- what to forward ----------------------------------------------------------------------
    def tenant_config(self) -> dict:
        """Helios' ``GET /ingest/config`` for this key: series, kinds, step (asked once)."""
        if self._config is None:
            response = self._send(lambda: self._helios.get("/ingest/config"), "asking for the tenant's configuration")
            self._config = response.json()
        return self._config

    def discover_prometheus(self, url: str | None = None, metrics: list[str] | None = None) -> list[str]:
        """The wanted series (``metrics``, else those given to the agent, else the tenant's
        configured ones) that the Prometheus at ``url`` holds; these are what the agent forwards."""
        if url:
            self.prometheus = PrometheusReader(url)
        if self.prometheus is None:
            raise ValueError("no Prometheus URL: pass one to discover_prometheus() or to HeliosAgent")
        wanted = metrics or self.metrics or [m["series"] for m in self.tenant_config()["metrics"]]
        available = self.prometheus.metric_names()
        found = [name for name in wanted if name in available]
        missing = sorted(set(wanted) - available)
        if missing:
            log.warning("Prometheus at %s has no series %s; they are not forwarded", self.prometheus.url, ", ".join(missing))
        self.metrics = found
        log.info("forwarding %s from %s", ", ".join(found) or "nothing", self.prometheus.url)
        return found

    def _step(self) -> int:
        if self.step_seconds is None:
            self.step_seconds = int(self.tenant_config()["step_seconds"])
        return self.step_seconds

    # ---- collecting ---------------------------------------------------------------------------
    def backfill(self, days: float) -> int:
        """The last ``days`` of history, from where each metric's high-water mark left off (so running
        it again resumes instead of repeating); returns how many samples were spooled."""
        step = self._step()
        end = self._collection_end(step)
        return self._collect(end, first_start=end - int(days * 86400) // step * step)

    def collect_once(self) -> int:
        """New grid points since each metric's high-water mark (only the latest one for a metric
        never collected before); returns how many samples were spooled."""
        end = self._collection_end(self._step())
        return self._collect(end, first_start=end)

    def _collection_end(self, step: int) -> int:
        return int(self.clock() - self.settle_seconds) // step * step

    def _collect(self, end_s: int, first_start: int) -> int:
        if self.metrics is None:
            self.discover_prometheus()
        step, spooled = self._step(), 0
        for series in self.metrics:
            mark = self.marks.get(series)
            start = mark // 1000 + step if mark is not None else first_start
            while start <= end_s:
                if self.spool.size_bytes() > self.max_spool_bytes:
                    log.warning("spool is over %d bytes; collection pauses until Helios takes it", self.max_spool_bytes)
                    return spooled
                # One spool batch at most per round, so the high-water mark follows the spool closely.
                chunk_end = min(end_s, start + (self.batch_size - 1) * step)
                by_labels = self.prometheus.grid_values(series, start, chunk_end, step)
                samples = [
                    {"metric": series, "labels": dict(labels), "timestamp": stamp, "value": value}
                    for labels, points in by_labels.items()
                    for stamp, value in points
                ]
                for offset in range(0, len(samples), self.batch_size):
                    self.spool.put(samples[offset : offset + self.batch_size])
                self.marks.advance(series, chunk_end * 1000)
                spooled += len(samples)
                start = chunk_end + step
        return spooled

    # ---- delivering ---------------------------------------------------------------------------
    def flush(self) -> int:
        """Sends the spool oldest first; returns how many batches Helios took. Stops at the first
        batch that still fails after the retries (it stays spooled for the next flush)."""
        delivered = 0
        for path in self.spool.pending():
            body = path.read_bytes()
            try:
                self._send(
                    lambda body=body: self._helios.post(
                        "/ingest", content=body, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}
                    ),
                    f"sending {path.name}",
                )
            except _Refused as refused:
                log.error("Helios refused %s, set aside in %s: %s", path.name, self.spool.rejected, refused)
                self.spool.reject(path)
                continue
            except HeliosError as error:
                log.warning("%s; %d batches stay spooled", error, len(self.spool.pending()))
                return delivered
            path.unlink()
            delivered += 1
        return delivered

    def _send(self, request, what: str) -> httpx.Response:
        """``request()`` with retries on network errors, 5xx, 408 and 429, backing off exponentially
        (the wait ends early when the agent is stopped)."""
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.retries + 1),
            wait=tenacity.wait_exponential(multiplier=self.backoff_seconds, max=MAX_BACKOFF_SECONDS),
            retry=tenacity.retry_if_exception_type(_Retryable), sleep=self._stop.wait, reraise=True,
        )
        try:
            return retrying(self._attempt, request, what)
        except _Retryable as failure:
            raise HeliosError(f"{what} to {self.endpoint} failed after {self.retries + 1} attempts; last: {failure}") from None

    @staticmethod
    def _attempt(request, what: str) -> httpx.Response:
        try:
            response = request()
        except httpx.TransportError as exc:
            raise _Retryable(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code < 400:
            return response
        failure = f"HTTP {response.status_code}: {response.text[:500]}"
        if response.status_code < 500 and response.status_code not in RETRIABLE:
            raise _Refused(f"{what}: {failure}")
        raise _Retryable(failure)

    # ---- running ------------------------------------------------------------------------------
    def run_once(self) -> None:
        """One round: collect what is new (the first round: the training window), then deliver the spool."""
        if not self._backfilled:
            # Resumes from the high-water marks, so a round that fails half-way loses nothing.
            self.backfill(self.training_days())
            self._backfilled = True
        else:
            self.collect_once()
        self.flush()

    def training_days(self) -> float:
        """How much history ``start()`` sends first: ``backfill_days``, else the tenant's training window."""
        if self.backfill_days is not None:
            return float(self.backfill_days)
        return float(self.tenant_config()["history_days"])

    def start(self, block: bool = True) -> None:
        """Forwards every ``interval_seconds`` until :meth:`stop`; ``block=False`` runs in a thread."""
        if not block:
            self._thread = threading.Thread(target=self.start, name="helios-agent", daemon=True)
            self._thread.start()
            return
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # Prometheus or Helios down: log, keep the spool, try next round
                log.exception("forwarding round failed; retrying in %.0f s", self.interval_seconds)
            self._stop.wait(self.interval_seconds)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def close(self) -> None:
        self.stop()
        self._helios.close()
        if self.prometheus is not None:
            self.prometheus.close()


class _Refused(HeliosError):
    """Helios answered a 4xx that a retry cannot fix."""


class _Retryable(Exception):
    """An attempt that failed in a way another attempt may not (network, 5xx, 408, 429)."""
