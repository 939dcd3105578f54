"""Steps on Celery workers (``HELIOS_EXECUTOR=celery``): dagster-celery's executor, with the broker
checked before any step is sent.

The broker is ``HELIOS_CELERY_BROKER`` (default: the machine's RabbitMQ,
``amqp://guest:guest@127.0.0.1:5672//``); workers read the same variable through
``deploy/dagster/dagster_celery_config.py`` and are started by ``scripts/celery_workers.sh``. Steps
share the instance's storage (PostgreSQL in production, ``deploy/dagster/dagster.yaml``) and pass
asset values through the IO manager (GCS in production; the filesystem under DAGSTER_HOME on one
machine). Without the check, a run launched while the broker is down waits on kombu's reconnects
instead of failing; with it, the run fails at once saying which broker is unreachable.
"""

from __future__ import annotations

from collections.abc import Mapping

from dagster import executor
from dagster._core.execution.retries import RetryMode
from dagster_celery.executor import CELERY_CONFIG, CeleryExecutor

DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672//"
BROKER_CHECK_SECONDS = 5.0


class BrokerUnavailableError(RuntimeError):
    """The Celery broker cannot be reached; the message names it."""


def broker_url(env: Mapping[str, str]) -> str:
    return env.get("HELIOS_CELERY_BROKER") or DEFAULT_BROKER


def check_broker(url: str, timeout: float = BROKER_CHECK_SECONDS) -> None:
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=timeout) as connection:
            connection.ensure_connection(max_retries=1, timeout=timeout)
    except Exception as exc:  # kombu raises the transport's own errors (socket, amqp, auth)
        shown = url.split("@")[-1]  # never the credentials
        raise BrokerUnavailableError(
            f"HELIOS_EXECUTOR=celery: the Celery broker at {shown} is unreachable ({exc}); start RabbitMQ "
            f"or point HELIOS_CELERY_BROKER at a running broker") from None


@executor(name="helios_celery", config_schema=CELERY_CONFIG)
def helios_celery_executor(init_context) -> CeleryExecutor:
    config = init_context.executor_config
    check_broker(config["broker"])
    return CeleryExecutor(broker=config["broker"], backend=config.get("backend"), include=config.get("include"),
                          config_source=config.get("config_source"), retries=RetryMode.from_config(config["retries"]))
