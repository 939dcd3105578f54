"""`helios db upgrade|retention`: the Helios store (SQLite under HELIOS_HOME, or $HELIOS_DATABASE_URL)."""

from __future__ import annotations

import click


def open_store():
    """The store, migrated: the embedded SQLite default is upgraded in place, so local use needs no
    extra step; any other database must have been upgraded with `helios db upgrade` (a deploy step)."""
    from helios_pipelines.core.ops import migrations
    from helios_pipelines.core.ops.store import Store, database_url

    url = database_url()
    if url.startswith("sqlite"):
        migrations.upgrade(url)
    elif migrations.current(url) != migrations.head():
        raise click.ClickException(
            f"the store at {_redacted(url)} is at revision {migrations.current(url)}, not "
            f"{migrations.head()}: run `helios db upgrade`"
        )
    return Store(url)


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@click.group("db")
def command() -> None:
    """The Helios store: tenants' keys, predictions, anomalies, the alert outbox."""


@command.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def upgrade(revision: str) -> None:
    """Create or migrate the store's tables (Alembic)."""
    from helios_pipelines.core.ops import migrations
    from helios_pipelines.core.ops.store import database_url

    url = database_url()
    click.echo(f"{_redacted(url)}: at revision {migrations.upgrade(url, revision)}")


@command.command("retention")
def retention() -> None:
    """Delete predictions, pushed samples (and series left without any), closed anomalies and finished alerts older
    than each tenant's plan keeps."""
    store = open_store()
    try:
        for tenant, removed in sorted(store.apply_retention().items()):
            click.echo(f"{tenant:16} " + "  ".join(f"{name} -{count}" for name, count in removed.items()))
    finally:
        store.close()
