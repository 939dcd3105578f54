"""The store's commands: tenants add|show|rotate-key|disable, accuracy, anomalies, alerts, db, events annotate."""

from __future__ import annotations

import shutil

import click
import pandas as pd
import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from helios_pipelines.commands import accuracy, alerts, anomalies, db, events, tenants
from helios_pipelines.core.ops.anomaly_log import record_detection
from helios_pipelines.core.ops.feedback import PredictionRecorder
from helios_pipelines.core.ops.store import Store
from helios_pipelines.core.ops.store.schema import Customer
from helios_pipelines.core.tenants import DEFAULT_CONFIG_DIR, load_tenants
from tests.conftest import AS_OF, FIXTURE_TENANTS


@click.group()
@click.option("--config-dir")
@click.pass_context
def helios(ctx: click.Context, config_dir: str) -> None:
    """The `helios` root with only the store's commands, so these tests do not depend on the others."""
    ctx.obj = {"config_dir": config_dir}


for module in (accuracy, alerts, anomalies, db, events, tenants):
    helios.add_command(module.command)


@pytest.fixture
def cli(store_url, tmp_path, monkeypatch):
    monkeypatch.setenv("HELIOS_DATABASE_URL", store_url)
    config_dir = tmp_path / "tenants"
    config_dir.mkdir()
    shutil.copy(FIXTURE_TENANTS / "arena.yaml", config_dir)
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(helios, ["--config-dir", str(config_dir), *args], catch_exceptions=False)

    run.config_dir = config_dir
    return run


def customers(store_url: str) -> list[str]:
    store = Store(store_url)
    try:
        with store.transaction() as session:
            return list(session.scalars(select(Customer.slug).order_by(Customer.slug)))
    finally:
        store.close()


def test_add_writes_the_yaml_and_the_store_row_and_prints_a_working_key(cli, store_url):
    result = cli("tenants", "add", "acme", "--name", "Acme", "--plan", "pro",
                 "--webhook-url", "https://hooks.example.com/x", "--webhook-secret-env", "ACME_SECRET",
                 "--pagerduty-routing-key-env", "ACME_PD_ROUTING_KEY")
    assert result.exit_code == 0, result.output
    key = result.output.split("store it now): ")[1].strip()
    tenant = load_tenants(cli.config_dir).get("acme")
    assert (tenant.plan, [w.type for w in tenant.alerts.webhooks]) == ("pro", ["pagerduty", "webhook"])
    assert tenant.alerts.webhooks[0].routing_key_env == "ACME_PD_ROUTING_KEY"
    store = Store(store_url)
    assert store.authenticate(key).slug == "acme"
    store.close()
    assert [p.name for p in cli.config_dir.iterdir() if p.name.startswith(".")] == []  # no staging left

    shown = cli("tenants", "show", "acme")
    assert "plan=pro status=active" in shown.output and "valid" in shown.output
    rotated = cli("tenants", "rotate-key", "acme", "--revoke-old")
    assert rotated.exit_code == 0 and "previous keys: revoked" in rotated.output
    store = Store(store_url)
    assert store.authenticate(key) is None
    store.close()
    assert cli("tenants", "disable", "acme").output == "tenant 'acme' is disabled\n"


def test_add_names_secrets_by_environment_variable_and_refuses_their_values(cli, store_url):
    """Issue #13.8: --slack-url and --pagerduty-routing-key wrote secrets into a world-readable tenant file."""
    slack_url, routing_key = "https://hooks.slack.com/services/T0/B0/s3cr3t", "R" * 32
    for flag, value, instead in (("--slack-url", slack_url, "--slack-url-env NAME"),
                                 ("--pagerduty-routing-key", routing_key, "--pagerduty-routing-key-env NAME")):
        refused = cli("tenants", "add", "acme", "--name", "Acme", flag, value)
        assert refused.exit_code == 2 and "would write a secret" in refused.output and instead in refused.output
        assert not (cli.config_dir / "acme.yaml").exists()
    added = cli("tenants", "add", "acme", "--name", "Acme", "--slack-url-env", "ACME_SLACK_URL",
                "--pagerduty-routing-key-env", "ACME_PD_ROUTING_KEY")
    assert added.exit_code == 0, added.output
    written = (cli.config_dir / "acme.yaml").read_text()
    hooks = {w.name: w for w in load_tenants(cli.config_dir).get("acme").alerts.webhooks}
    assert (hooks["slack"].url_env, hooks["pagerduty"].routing_key_env) == ("ACME_SLACK_URL", "ACME_PD_ROUTING_KEY")
    assert "hooks.slack.com" not in written and "routing_key:" not in written


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--webhook-url", "ftp://files.example.com"], "alerts.webhooks.0.url: 'ftp://files.example.com' is not an http(s) URL with a host"),
        (["--pagerduty-url", "https://events.pagerduty.com/v2/enqueue"], "needs exactly one of routing_key and routing_key_env"),
        (["--plan", "starter", "--slack-url-env", "ACME_SLACK_URL"], "the starter plan does not include it"),
        (["--name", "Arena again"], "tenant 'arena' already exists"),
    ],
)
def test_bad_input_is_a_clear_error_and_writes_nothing(cli, store_url, args, message):
    tenant_id = "arena" if "Arena again" in args else "acme"
    before = sorted(p.name for p in cli.config_dir.iterdir())
    result = cli("tenants", "add", tenant_id, "--name", "Acme", *args)
    assert result.exit_code == 1
    assert message in result.output
    assert sorted(p.name for p in cli.config_dir.iterdir()) == before
    assert customers(store_url) == []


def test_a_customer_already_in_the_store_is_a_duplicate_and_leaves_no_file(cli, store_url):
    assert cli("tenants", "sync").exit_code == 0
    (cli.config_dir / "arena.yaml").rename(cli.config_dir / "elsewhere.yaml.bak")
    result = cli("tenants", "add", "arena", "--name", "Arena")
    assert result.exit_code == 1 and "customer 'arena' already exists in the store" in result.output
    assert not (cli.config_dir / "arena.yaml").exists()


def test_unknown_tenants_are_named(cli):
    for args in (["tenants", "show", "nobody"], ["tenants", "rotate-key", "nobody"], ["accuracy", "nobody"],
                 ["anomalies", "list", "nobody"]):
        result = cli(*args)
        assert result.exit_code == 1 and "nobody" in result.output, args


def test_accuracy_and_anomalies_commands(cli, store_url, arena):
    assert cli("tenants", "sync").exit_code == 0
    store = Store(store_url)
    targets = pd.date_range(AS_OF - pd.Timedelta("2h"), AS_OF - pd.Timedelta("5min"), freq="5min")
    with PredictionRecorder(store, flush_interval=0.05) as recorder:
        for target in targets:
            recorder.record({"tenant": "arena", "metric": "concurrent_users", "horizon_minutes": 15,
                             "origin": (target - pd.Timedelta("15min")).isoformat(), "target_time": target.isoformat(),
                             "value": 3000.0, "lower": 2000.0, "upper": 4000.0, "interval": 0.8})
    record_detection(store, arena, {"threshold": 0.5, "scores": [
        {"metric": "queue_length", "timestamp": AS_OF.isoformat(), "value": 90.0, "score": 0.97, "anomalous": True}]})
    store.close()

    result = cli("accuracy", "arena", "--window", "1h", "--windows", "3", "--as-of", AS_OF.isoformat())
    assert result.exit_code == 0, result.output
    assert f"joined {len(targets)} actuals" in result.output
    assert "concurrent_users" in result.output and "15m" in result.output

    listed = cli("anomalies", "list", "arena", "--open")
    assert "queue_length" in listed.output and "score 0.97" in listed.output and "unacked" in listed.output
    anomaly_id = listed.output.split()[0]
    assert cli("anomalies", "ack", anomaly_id, "--by", "sre").exit_code == 0
    assert "acked by sre" in cli("anomalies", "list", "arena").output
    assert "no anomaly 99999" in cli("anomalies", "ack", "99999").output
    # arena has no webhooks, so the anomaly routed no alert
    assert cli("alerts", "list").output == "no alerts\n"


def test_events_annotate_stores_a_change_as_post_annotations_does_and_refuses_a_malformed_one_storing_nothing(
        cli, store_url):
    assert cli("tenants", "sync").exit_code == 0
    deployed = cli("events", "annotate", "arena", "--time", "1796133600000", "--end", "2026-12-01T14:15:00Z",
                   "--tag", "deploy", "--text", "checkout v2.3", "--metric", "game_server_active_players")
    assert deployed.exit_code == 0, deployed.output
    assert "of arena: deploy 'checkout v2.3' at 2026-12-01T14:00:00+00:00 until 2026-12-01T14:15:00+00:00" in deployed.output
    store = Store(store_url)
    try:
        ((_, stored),) = store.changes_after("arena")
        assert (stored["time"], stored["kind"], stored["metrics"]) == ("2026-12-01T14:00:00Z", "deploy", ["concurrent_users"])
        backwards = cli("events", "annotate", "arena", "--time", "2026-12-01T14:00:00Z", "--end", "2026-12-01T13:00:00Z")
        assert backwards.exit_code == 1 and "tenant 'arena': time_end (Grafana's timeEnd)" in backwards.output
        unknown = cli("events", "annotate", "arena", "--time", "2026-12-01T14:00:00Z", "--metric", "mana_pool")
        assert unknown.exit_code == 1 and "mana_pool" in unknown.output
        assert len(store.changes_after("arena")) == 1
    finally:
        store.close()


def test_db_upgrade_and_retention(cli, store_url):
    from helios_pipelines.core.ops.migrations import head

    assert f"at revision {head()}" in cli("db", "upgrade").output
    assert cli("tenants", "sync").exit_code == 0
    assert "arena" in cli("db", "retention").output


def test_the_template_the_cli_copies_is_valid_for_every_plan(cli):
    for plan in ("starter", "pro", "enterprise"):
        assert cli("tenants", "add", f"t-{plan}", "--name", plan, "--plan", plan).exit_code == 0
    assert set(load_tenants(cli.config_dir).ids) == {"arena", "t-starter", "t-pro", "t-enterprise"}
    assert (DEFAULT_CONFIG_DIR / "_template.yaml").exists()
    store = Store()
    with store.transaction() as session:
        assert session.scalar(select(func.count()).select_from(Customer)) == 3
    store.close()
