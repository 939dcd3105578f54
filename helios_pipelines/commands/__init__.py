"""Sub-commands of ``helios``: every module here exposes ``command`` (a click command or group),
which ``helios_pipelines.cli`` mounts. Keep imports of heavy libraries inside the commands."""

from __future__ import annotations

import click

from helios_pipelines.core.tenants import (
    TenantConfig,
    TenantConfigError,
    TenantRegistry,
    UnknownTenantError,
    load_tenants,
)


def registry(ctx: click.Context) -> TenantRegistry:
    """The tenant registry of ``helios --config-dir`` (configs/tenants by default)."""
    try:
        return load_tenants(ctx.find_root().obj["config_dir"])
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None


def tenant(ctx: click.Context, tenant_id: str) -> TenantConfig:
    """One valid tenant, or a ClickException naming what is wrong with it."""
    try:
        return registry(ctx).get(tenant_id)
    except (UnknownTenantError, TenantConfigError) as exc:
        raise click.ClickException(str(exc)) from None
