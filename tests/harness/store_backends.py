"""The store fixture, on SQLite and on the machine's PostgreSQL.

Each PostgreSQL test gets a schema of its own (dropped afterwards) in the database named by
``HELIOS_TEST_POSTGRES_URL`` (default: the local server's ``test`` database). PostgreSQL tests are
skipped, saying why, only when that server cannot be reached.
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from helios_pipelines.core.ops import migrations
from helios_pipelines.core.ops.store import Store
from helios_pipelines.core.tenants import TenantConfig

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
PAGERDUTY_KEY = "R0UT1NGKEY0000000000000000000032"  # PagerDuty integration keys have 32 characters
POSTGRES_URL = os.environ.get("HELIOS_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")


def _postgres_unreachable() -> str | None:
    engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as connection:
            connection.execute(text("select 1"))
        return None
    except OperationalError as exc:
        return f"PostgreSQL at {POSTGRES_URL} is unreachable: {str(exc.orig).strip()}"
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def postgres_admin():
    reason = _postgres_unreachable()
    if reason:
        pytest.skip(reason)
    engine = create_engine(POSTGRES_URL)
    yield engine
    engine.dispose()


def schema_url(schema: str) -> str:
    separator = "&" if "?" in POSTGRES_URL else "?"
    return f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """A migrated, empty store's URL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'helios.db'}"
        migrations.upgrade(url)
        yield url
        return
    admin = request.getfixturevalue("postgres_admin")
    schema = f"helios_test_{uuid.uuid4().hex[:12]}"
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = schema_url(schema)
    try:
        migrations.upgrade(url)
        yield url
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


@pytest.fixture
def store(store_url):
    opened = Store(store_url)
    yield opened
    opened.close()


def tenant_config(tenant_id: str = "acme", plan: str = "pro", metrics: int = 2, anomaly: bool = True,
                  webhooks: list[dict] | None = None) -> TenantConfig:
    """A small valid tenant: ``metrics`` metrics, the first forecast (and watched for anomalies)."""
    names = ["concurrent_users"] + [f"extra_{i}" for i in range(1, metrics)]
    return TenantConfig.model_validate({
        "id": tenant_id, "name": tenant_id.title(), "plan": plan, "step": "5min",
        "metrics": {
            name: {"series": f"series_{name}", "anomaly": anomaly and i == 0, "unit": "players",
                   **({"forecast": {"horizons": ["15m", "1h"]}} if i == 0 else {})}
            for i, name in enumerate(names)
        },
        "alerts": {"webhooks": webhooks if webhooks is not None else [
            {"name": "ops", "type": "webhook", "url": "http://127.0.0.1:9/hook", "events": ["anomaly_detected"]},
            {"name": "pager", "type": "pagerduty", "url": "http://127.0.0.1:9/pd", "routing_key_env": "PAGER_ROUTING_KEY",
             "events": ["capacity_critical"]},
        ]},
    })


def add_customer(store: Store, tenant: TenantConfig) -> str:
    """The tenant's customer row; returns its first API key."""
    with store.transaction() as session:
        return store.add_customer(session, tenant, NOW)[1]
