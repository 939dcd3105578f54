"""The ``helios`` command: validate tenants, run the pipeline, serve, benchmark."""

from __future__ import annotations

import importlib
import logging
import os
import pkgutil
import sys
import threading
import uuid
from pathlib import Path

import click

from helios_pipelines.commands import registry as load_registry
from helios_pipelines.commands import tenant as load_tenant
from helios_pipelines.core.settings import apply_local_defaults


@click.group()
@click.option("--config-dir", envvar="HELIOS_CONFIG_DIR", default=None, help="tenant registry (configs/tenants)")
@click.pass_context
def main(ctx: click.Context, config_dir: str | None) -> None:
    """Helios: forecasts, anomaly scores and scaling recommendations per tenant."""
    apply_local_defaults()
    ctx.obj = {"config_dir": config_dir}


@main.command()
@click.pass_context
def validate(ctx: click.Context) -> None:
    """Validate every tenant file; exit 1 naming each bad file, key and problem."""
    registry = load_registry(ctx)
    for tenant in registry.ids:
        click.echo(f"ok      {tenant}")
    for error in registry.errors:
        click.echo(f"INVALID {error}", err=True)
    if registry.errors:
        sys.exit(1)


def _selected(ctx: click.Context, names: tuple[str, ...]) -> list[str]:
    for name in names:
        load_tenant(ctx, name)
    return list(names) or load_registry(ctx).ids


@main.command()
@click.argument("tenant_ids", nargs=-1)
@click.option("--as-of", default=None, help="end of the training window (ISO time); default: now, floored to the hour")
@click.option("--no-bento", is_flag=True, help="pack the BentoML model but skip `bentoml build`")
@click.pass_context
def run(ctx: click.Context, tenant_ids: tuple[str, ...], as_of: str | None, no_bento: bool) -> None:
    """Run the whole pipeline for the given tenants (all by default), then print a summary."""
    # MLflow's INFO lines (database set-up, input-example checks) would interleave with the asset lines.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    import pandas as pd
    from dagster import DagsterInstance
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from helios_pipelines.core.settings import helios_home
    from helios_pipelines.definitions import build_definitions
    from helios_pipelines.defs.partitions import tenant_partitions

    registry = load_registry(ctx)
    selected = _selected(ctx, tenant_ids)
    env = dict(os.environ)
    if ctx.obj["config_dir"]:  # the definitions read the registry from the environment, as `dagster dev` gives it
        env["HELIOS_CONFIG_DIR"] = ctx.obj["config_dir"]
    if as_of:
        env["HELIOS_AS_OF"] = as_of
    if no_bento:
        env["HELIOS_BUILD_BENTO"] = "0"
    defs = build_definitions(env)
    instance = DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(
        tenant_partitions.name, [t for t in selected if not instance.has_dynamic_partition(tenant_partitions.name, t)]
    )
    job = defs.resolve_job_def("tenant_training_job")
    assets = len(job.nodes_in_topological_order)
    failed = []
    log_path = helios_home() / "logs" / f"run-{pd.Timestamp.now(tz='UTC'):%Y%m%dT%H%M%SZ}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    click.echo(f"Dagster's full event log: {log_path} (and the Dagster UI: make ui)")
    # Dagster's console logger would print hundreds of DEBUG lines per tenant: errors only on the
    # terminal, everything in the log file, one line per asset here as it finishes.
    quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  transient=False) as progress:
        bar = progress.add_task("assets", total=len(selected) * assets)
        for tenant_id in selected:
            progress.update(bar, description=f"assets (now {tenant_id})")
            run_id = str(uuid.uuid4())
            watcher = _AssetWatcher(instance, run_id, tenant_id, progress, bar)
            watcher.start()
            try:
                result = job.execute_in_process(partition_key=tenant_id, instance=instance, raise_on_error=False,
                                                run_config=quiet, run_id=run_id)
            finally:
                watcher.finish()
            _write_event_log(log_path, tenant_id, instance.all_logs(result.run_id))
            if not result.success:
                failed.append(tenant_id)
            progress.update(bar, completed=(selected.index(tenant_id) + 1) * assets)  # steps a failure skipped
    _print_summary(registry, selected)
    if failed:
        raise click.ClickException(f"pipeline failed for: {', '.join(failed)} (the others finished)")


class _AssetWatcher(threading.Thread):
    """Prints one line per asset of a tenant's run as it finishes (its elapsed time, or the error that
    stopped it) and advances the bar, reading the run's event log while the run executes."""

    def __init__(self, instance, run_id: str, tenant_id: str, progress, bar):
        super().__init__(daemon=True)
        self.instance, self.run_id, self.tenant_id, self.progress, self.bar = instance, run_id, tenant_id, progress, bar
        self.done = threading.Event()
        self.seen = 0

    def run(self) -> None:
        while not self.done.wait(0.5):
            self._read()

    def finish(self) -> None:
        self.done.set()
        self.join()
        self._read()

    def _read(self) -> None:
        entries = self.instance.all_logs(self.run_id)
        for entry in entries[self.seen:]:
            line = _asset_line(self.tenant_id, entry.dagster_event) if entry.dagster_event else None
            if line:
                self.progress.console.print(line, highlight=False)
                self.progress.advance(self.bar)
        self.seen = len(entries)


def _asset_line(tenant_id: str, event) -> str | None:
    """An asset's line: how long it took, or why it failed; None for every other event."""
    if event.event_type_value == "STEP_SUCCESS":
        seconds = event.event_specific_data.duration_ms / 1000
        return f"{tenant_id:14} {event.step_key:22} ok     {seconds:7.1f} s"
    if event.event_type_value == "STEP_FAILURE":
        error = event.step_failure_data.error
        while error is not None and error.cause is not None:  # the user's exception, not Dagster's wrapper
            error = error.cause
        return f"{tenant_id:14} {event.step_key:22} FAILED {(error.message if error else event.message).strip()}"
    return None


def _write_event_log(path: Path, tenant_id: str, entries) -> None:
    """Every entry of a run's Dagster event log (what the console logger would have printed)."""
    from datetime import UTC, datetime

    with path.open("a") as log:
        for entry in entries:
            stamp = datetime.fromtimestamp(entry.timestamp, UTC).isoformat(timespec="seconds")
            kind = entry.dagster_event.event_type_value if entry.dagster_event else logging.getLevelName(entry.level)
            log.write(f"{stamp} {tenant_id} {kind} {entry.step_key or ''} {entry.user_message or entry.message}\n")


def _print_summary(registry, tenant_ids: list[str]) -> None:
    from helios_pipelines.core.ml.tracking import CHAMPION, Tracker, registered_model_name

    tracker = Tracker()
    click.echo("\nSummary (backtest MASE: lower is better; 1.0 = the one-day seasonal-naive in-sample error)")
    for tenant_id in tenant_ids:
        tenant = registry.get(tenant_id)
        click.echo(f"  {tenant_id}")
        for metric in tenant.forecast_metrics:
            name = registered_model_name(tenant_id, "forecaster", metric)
            champion = tracker.version_by_alias(name, CHAMPION)
            if champion is None:
                click.echo(f"    {metric:22} no champion")
                continue
            tags = champion.tags
            click.echo(
                f"    {metric:22} {tags.kind or '?':15} MASE {tags.backtest_mase or '?':>7} "
                f"vs baseline {tags.baseline_mase or '?':>7}   champion v{champion.version}"
            )
        for capability in ("anomaly_detector", "capacity_planner"):
            champion = tracker.version_by_alias(registered_model_name(tenant_id, capability), CHAMPION)
            click.echo(f"    {capability:22} {'champion v' + champion.version if champion else 'no champion'}")


@main.command()
@click.argument("tenant_id")
@click.option("--port", default=3000, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.pass_context
def serve(ctx: click.Context, tenant_id: str, port: int, host: str) -> None:
    """Serve one tenant's champions, as the MLflow registry names them now, with its current config, with
    `bentoml serve` (their BentoML model, packed first if this pair of champions and config was not packed yet)."""
    from helios_pipelines.core.ml.tracking import Tracker
    from serving.packaging import PackagingError, save_bento_model

    tenant = load_tenant(ctx, tenant_id)
    try:
        bundle = save_bento_model(tenant, Tracker())
    except PackagingError as exc:
        raise click.ClickException(f"{exc}; train it first: helios run {tenant_id}") from None
    click.echo(f"serving {bundle}")
    root = Path(__file__).resolve().parents[1]
    command = [
        sys.executable, "-m", "bentoml", "serve", "serving.service:HeliosService", "--working-dir", str(root),
        "--host", host, "--port", str(port), "--arg", f"tenants={tenant_id}", "--arg", f"bundles={bundle}",
    ]
    sys.stdout.flush()
    # bentoml serve replaces this process, so a stop signal reaches it: run as a child, it outlived a
    # SIGTERM sent to helios serve, serving on and holding the port.
    os.execv(sys.executable, command)


def _mount_commands() -> None:
    from helios_pipelines import commands

    for module in pkgutil.iter_modules(commands.__path__):
        main.add_command(importlib.import_module(f"{commands.__name__}.{module.name}").command)


_mount_commands()


if __name__ == "__main__":  # `python -m helios_pipelines.cli`: the alert delivery container runs it so
    main()
