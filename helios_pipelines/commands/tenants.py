"""`helios tenants ...`: the tenant registry."""

import click

from helios_pipelines.commands import registry


@click.group("tenants")
def command() -> None:
    """The tenant registry."""


@command.command("list")
@click.pass_context
def tenants_list(ctx: click.Context) -> None:
    """One line per tenant; invalid files are listed with their errors."""
    found = registry(ctx)
    for tenant in found.tenants.values():
        forecast = ", ".join(tenant.forecast_metrics)
        click.echo(f"{tenant.id:16} {tenant.plan:10} source={tenant.source.type:10} step={tenant.step:6} forecast: {forecast}")
    for error in found.errors:
        click.echo(f"INVALID {error}", err=True)
