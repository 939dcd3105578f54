"""``helios-agent``: forward a local Prometheus to Helios. Every flag has an environment variable."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from helios_sdk.agent import HeliosAgent, HeliosError
from helios_sdk.prometheus import PrometheusError


def _parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="helios-agent",
        description="Discover the tenant's metrics in a local Prometheus, backfill their history once, "
        "then forward new samples to Helios every interval (spooled on disk while Helios is unreachable).",
    )
    parser.add_argument("--api-key", default=env("HELIOS_API_KEY"), help="tenant API key [HELIOS_API_KEY]")
    parser.add_argument("--endpoint", default=env("HELIOS_ENDPOINT"), help="Helios base URL [HELIOS_ENDPOINT]")
    parser.add_argument("--customer-id", default=env("HELIOS_CUSTOMER_ID"), help="tenant id [HELIOS_CUSTOMER_ID]")
    parser.add_argument("--prometheus-url", default=env("PROMETHEUS_URL", "http://localhost:9090"),
                        help="local Prometheus [PROMETHEUS_URL, default http://localhost:9090]")
    parser.add_argument("--metrics", default=env("HELIOS_AGENT_METRICS"),
                        help="comma-separated series names [HELIOS_AGENT_METRICS, default: the tenant's configured ones]")
    parser.add_argument("--backfill-days", type=float, default=env("HELIOS_AGENT_BACKFILL_DAYS"),
                        help="history sent once at start [HELIOS_AGENT_BACKFILL_DAYS, default: the tenant's training window]")
    parser.add_argument("--interval", type=float, default=float(env("HELIOS_AGENT_INTERVAL", "60")),
                        help="seconds between forwarding rounds [HELIOS_AGENT_INTERVAL, default 60]")
    parser.add_argument("--data-dir", default=env("HELIOS_AGENT_DIR"),
                        help="spool and high-water marks [HELIOS_AGENT_DIR, default ~/.helios-agent/<customer>]")
    parser.add_argument("--once", action="store_true", help="backfill and forward once, then exit (cron)")
    parser.add_argument("--log-level", default=env("HELIOS_AGENT_LOG_LEVEL", "INFO"))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    missing = [flag for flag, value in (("--api-key", args.api_key), ("--endpoint", args.endpoint),
                                        ("--customer-id", args.customer_id)) if not value]
    if missing:
        parser.error(f"missing {', '.join(missing)} (or their environment variables)")
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    agent = HeliosAgent(
        args.api_key, args.endpoint, args.customer_id, args.prometheus_url,
        metrics=[m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None,
        data_dir=args.data_dir, interval_seconds=args.interval,
        backfill_days=float(args.backfill_days) if args.backfill_days else None,
    )
    signal.signal(signal.SIGTERM, lambda *_: agent.stop())
    try:
        agent.discover_prometheus()
        if args.once:
            agent.run_once()  # the first round sends the training window
            pending = len(agent.spool.pending())
            if pending:
                print(f"helios-agent: Helios did not take {pending} batches; they stay in {agent.spool.directory}",
                      file=sys.stderr)
                return 1
        else:
            agent.start()
    except (HeliosError, PrometheusError) as error:
        print(f"helios-agent: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        agent.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
