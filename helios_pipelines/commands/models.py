"""``helios models``: review a tenant's registered models and move ``champion`` by hand."""

from __future__ import annotations

import getpass

import click

from helios_pipelines.commands import tenant as load_tenant


def _tracker():
    from helios_pipelines.core.ml.tracking import Tracker

    return Tracker()


def _fmt(value: float | None, pattern: str = "{:.3f}") -> str:
    return "-" if value is None else pattern.format(value)


def _model_names(tracker, tenant_id: str, model: str | None) -> list[str]:
    from helios_pipelines.core.ml.review import ReviewError, resolve_model_name

    try:
        names = [resolve_model_name(tracker, tenant_id, model)] if model else tracker.registered_models(tenant_id)
    except ReviewError as exc:
        raise click.ClickException(str(exc)) from None
    if not names:
        raise click.ClickException(f"tenant '{tenant_id}' has no registered models yet (run its pipeline first)")
    return names


def _by_alias(tracker, name: str):
    from helios_pipelines.core.ml.review import VersionSummary
    from helios_pipelines.core.ml.tracking import CHALLENGER, CHAMPION

    found = {alias: tracker.version_by_alias(name, alias) for alias in (CHAMPION, CHALLENGER)}
    return {alias: VersionSummary.of(v) if v else None for alias, v in found.items()}


@click.group("models")
def command() -> None:
    """Review a tenant's registered models: list, compare, promote, rollback."""


@command.command("list")
@click.argument("tenant_id")
@click.pass_context
def list_models(ctx: click.Context, tenant_id: str) -> None:
    """Each registered model with its champion and challenger versions and their backtest numbers."""
    load_tenant(ctx, tenant_id)
    tracker = _tracker()
    click.echo(f"{'model':42} {'alias':10} {'version':>7} {'kind':15} {'MASE':>7} {'sMAPE':>7} {'coverage':>8}")
    for name in _model_names(tracker, tenant_id, None):
        for alias, summary in _by_alias(tracker, name).items():
            if summary is None:
                click.echo(f"{name:42} {alias:10} {'-':>7}")
                continue
            click.echo(
                f"{name:42} {alias:10} {summary.version:>7} {summary.kind:15} {_fmt(summary.mase):>7} "
                f"{_fmt(summary.smape):>7} {_fmt(summary.coverage, '{:.2f}'):>8}"
            )


@command.command()
@click.argument("tenant_id")
@click.argument("model", required=False)
@click.pass_context
def compare(ctx: click.Context, tenant_id: str, model: str | None) -> None:
    """Challenger against champion, side by side: backtest numbers, data window, source and the
    promotion decision. MODEL is a registered name, a metric or a capability; all models by default."""
    load_tenant(ctx, tenant_id)
    tracker = _tracker()
    rows = [
        ("version", lambda s: s.version),
        ("kind", lambda s: s.kind),
        ("backtest MASE", lambda s: _fmt(s.mase)),
        ("baseline MASE", lambda s: _fmt(s.baseline_mase)),
        ("sMAPE", lambda s: _fmt(s.smape)),
        ("interval coverage", lambda s: _fmt(s.coverage, "{:.2f}")),
        ("data window", lambda s: f"{s.data_start or '?'} .. {s.data_end or '?'}"),
        ("source", lambda s: s.source or "-"),
        ("evaluation", lambda s: ", ".join(f"{k}={v:.3g}" for k, v in (s.evaluation or {}).items()) or "-"),
        ("promotion", lambda s: s.promotion or "-"),
    ]
    for name in _model_names(tracker, tenant_id, model):
        summaries = _by_alias(tracker, name)
        click.echo(f"\n{name}")
        click.echo(f"  {'':18} {'champion':40} challenger")
        for label, read in rows:
            champion, challenger = (read(s) if s else "-" for s in summaries.values())
            click.echo(f"  {label:18} {champion:40} {challenger}")
        champion, challenger = summaries.values()
        if champion and challenger and champion.version == challenger.version:
            click.echo("  the challenger is the champion")


_WHO = click.option("--by", "by", default=getpass.getuser, show_default="the current user", help="who decides")
_WHY = click.option("--reason", required=True, help="why; kept on the version for the next reviewer")


@command.command()
@click.argument("tenant_id")
@click.argument("model")
@click.option("--version", default=None, help="the version to promote; the challenger by default")
@_WHO
@_WHY
@click.pass_context
def promote(ctx: click.Context, tenant_id: str, model: str, version: str | None, by: str, reason: str) -> None:
    """Move ``champion`` to the challenger (or --version), recording who and why."""
    from mlflow.exceptions import MlflowException

    from helios_pipelines.core.ml import review

    load_tenant(ctx, tenant_id)
    tracker = _tracker()
    name = _model_names(tracker, tenant_id, model)[0]
    try:
        before, after = review.promote(tracker, name, by=by, reason=reason, version=version)
    except (review.ReviewError, MlflowException) as exc:  # MLflow's: a version that does not exist
        raise click.ClickException(str(exc)) from None
    click.echo(f"{name}: champion v{before or '-'} -> v{after} (by {by}: {reason})")


@command.command()
@click.argument("tenant_id")
@click.argument("model")
@_WHO
@_WHY
@click.pass_context
def rollback(ctx: click.Context, tenant_id: str, model: str, by: str, reason: str) -> None:
    """Serve the previous champion again, in one step."""
    from helios_pipelines.core.ml import review

    load_tenant(ctx, tenant_id)
    tracker = _tracker()
    name = _model_names(tracker, tenant_id, model)[0]
    try:
        current, previous = review.rollback(tracker, name, by=by, reason=reason)
    except review.ReviewError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{name}: rolled back v{current} -> champion v{previous} (by {by}: {reason})")
