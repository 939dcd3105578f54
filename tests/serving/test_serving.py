"""Real HTTP against a `bentoml serve` the test starts, serving the arena tenant's packed champions."""

import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from helios_pipelines.core.ml.tracking import CHAMPION, Tracker
from tests.conftest import FIXTURE_TENANTS
from tests.harness.serve_harness import bentoml_serve

pytestmark = pytest.mark.slow  # starts real processes: the real-process tier (make test-fast skips it)



@pytest.fixture(scope="module")
def service(trained_arena, embedded_store, tmp_path_factory):
    assert trained_arena.success
    with bentoml_serve(tmp_path_factory.mktemp("serve"), "--arg", "tenants=arena") as client:
        yield client


def test_predict_answers_with_bounds_target_time_and_pinned_version(service):
    response = service.post("/predict", json={"metric": "concurrent_users", "horizon": 60})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["tenant"] == "arena" and body["metric"] == "concurrent_users"
    assert 0 < body["lower"] <= body["value"] <= body["upper"]
    origin, target = datetime.fromisoformat(body["origin"]), datetime.fromisoformat(body["target_time"])
    assert target - origin == timedelta(minutes=60)
    assert abs(datetime.now(UTC) - origin) < timedelta(minutes=10)
    champion = Tracker().version_by_alias("arena_concurrent_users_forecaster", CHAMPION)
    assert body["model"]["version"] == champion.version


def test_served_predictions_are_recorded_once_for_the_feedback_loop(service, embedded_store):
    from sqlalchemy import func, select

    from helios_pipelines.core.ops.store.schema import Prediction

    body = service.post("/predict", json={"metric": "concurrent_users", "horizon": 15}).json()
    service.post("/predict", json={"metric": "concurrent_users", "horizon": 15}).raise_for_status()
    # The watch may have recorded this step's published forecast already: one row per origin either way.
    this_forecast = select(func.count()).select_from(Prediction).where(
        Prediction.customer_id == embedded_store.customer_id("arena"),
        Prediction.metric_name == "concurrent_users",
        Prediction.horizon_minutes == 15,
        Prediction.issued_at == datetime.fromisoformat(body["origin"]),
    )
    deadline = time.monotonic() + 15
    while _count(embedded_store, this_forecast) == 0:
        assert time.monotonic() < deadline, "the recorder did not write the prediction"
        time.sleep(0.5)
    assert _count(embedded_store, this_forecast) == 1


def _count(store, query) -> int:
    with store.transaction() as session:
        return session.execute(query).scalar_one()


def test_predict_accepts_the_series_name(service):
    body = service.post("/predict", json={"metric": "game_server_active_players", "horizon": 15}).json()
    assert body["metric"] == "concurrent_users" and body["horizon"] == "15m"


def test_predict_errors_name_the_problem(service):
    unknown = service.post("/predict", json={"metric": "mana_pool", "horizon": 15})
    assert unknown.status_code == 404
    assert "no metric 'mana_pool'" in unknown.json()["error"] and "concurrent_users" in unknown.text
    # The guide's GET /predict renders the same error table (serving/errors.py) the same way.
    unknown_get = service.get("/predict", params={"metric": "mana_pool", "horizon": 15})
    assert (unknown_get.status_code, unknown_get.json()) == (404, unknown.json())
    too_far = service.post("/predict", json={"metric": "concurrent_users", "horizon": 600})
    assert too_far.status_code == 400 and "beyond the 60 min" in too_far.json()["error"]
    malformed = service.post("/predict", json={"metric": "concurrent_users", "horizon": "soon"})
    assert malformed.status_code == 400 and "horizon" in malformed.text
    not_json = service.post("/predict", content=b"{not json", headers={"Content-Type": "application/json"})
    assert 400 <= not_json.status_code < 500


def test_detect_scores_every_watched_metric(service):
    body = service.post("/detect", json={}).json()
    assert {s["metric"] for s in body["scores"]} == {"concurrent_users", "queue_length", "cpu_usage"}
    assert 0 < body["threshold"] < 1
    for score in body["scores"]:
        assert score["score"] is None or 0 <= score["score"] <= 1


def test_detect_flags_a_posted_spike(service):
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    normal = service.post("/predict", json={"metric": "concurrent_users", "horizon": 15}).json()
    points = [{"timestamp": (now + timedelta(minutes=5)).isoformat(), "value": normal["upper"] * 20}]
    body = service.post("/detect", json={"metric": "concurrent_users", "points": points}).json()
    [score] = body["scores"]
    assert score["value"] == pytest.approx(normal["upper"] * 20)
    assert score["score"] >= body["threshold"] and score["anomalous"] is True
    bad = service.post("/detect", json={"metric": "concurrent_users", "points": [{"timestamp": now.isoformat(), "value": "NaN"}]})
    assert bad.status_code == 400


def test_recommend_names_the_planner_and_forecaster_versions_it_was_answered_by(service):
    """The answer named its forecaster only: the capacity planner (learned capacity per replica, lead
    time, behaviour) it was computed by could not be checked against the registry's champion."""
    body = service.post("/recommend", json={"service": "game-server"}).json()
    tracker = Tracker()
    assert body["planner_model"]["version"] == tracker.version_by_alias("arena_capacity_planner", CHAMPION).version
    assert body["planner_model"]["name"] == "arena_capacity_planner"
    assert body["forecast_model"]["version"] == tracker.version_by_alias("arena_concurrent_users_forecaster", CHAMPION).version


def test_recommend_shows_the_arithmetic(service):
    response = service.post("/recommend", json={"service": "game-server", "current_replicas": 10})
    assert response.status_code == 200, response.text
    body = response.json()
    assert 2 <= body["replicas"] <= 200
    names = [s["name"] for s in body["steps"]]
    assert names[0] == "forecast" and "usable_capacity_per_replica" in names and "clamped" in names
    forecast = body["steps"][0]["value"]
    assert body["steps"][names.index("usable_capacity_per_replica")]["value"] == pytest.approx(80)
    expected = body["steps"][names.index("expected_forecast")]["value"]
    needed = body["steps"][names.index("replicas_for_forecast")]["value"]
    # The point forecast at the target utilisation (100 x 0.8), the upper quantile at capacity_critical
    # (100 x 0.9, arena's default thresholds).
    assert needed == max(-(-expected // 80), -(-forecast // 90))
    # Arena's history has replicas but no utilisation series: the configured capacity, saying why.
    used = body["planner_inputs"]["capacity_per_replica"]
    assert used["source"] == "config" and "utilization_metric (not configured)" in used["note"]
    unknown = service.post("/recommend", json={"service": "matchmaker"})
    assert unknown.status_code == 404 and "game-server" in unknown.text


def test_the_tenant_bento_was_built_offline(trained_arena):
    import bentoml

    packed = trained_arena.output_for_node("tenant_bento")
    assert packed["model"].startswith("helios-arena:")
    bento = bentoml.bentos.get(packed["bento"])
    assert packed["model"] in {str(m.tag) for m in bento.info.models}


SELECTOR = 'helios_forecast_value{customer="arena", metric="concurrent_users", horizon="1h"}'


def test_keda_shaped_request_reads_exactly_one_forecast_series(service):
    # KEDA's prometheus scaler: GET /api/v1/query?query=...&time=<RFC3339>, one vector element.
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    response = service.get("/api/v1/query", params={"query": SELECTOR, "time": now})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "success" and body["data"]["resultType"] == "vector"
    [element] = body["data"]["result"]
    assert element["metric"] == {"__name__": "helios_forecast_value", "customer": "arena",
                                 "metric": "concurrent_users", "horizon": "1h"}
    predicted = service.post("/predict", json={"metric": "concurrent_users", "horizon": 60}).json()["value"]
    assert float(element["value"][1]) == pytest.approx(predicted)
    for wrong in ('helios_forecast_value{customer="arena"}', 'helios_forecast_value{customer="ghost"}'):
        refused = service.get("/api/v1/query", params={"query": wrong, "time": now})
        assert refused.status_code in (400, 422) and refused.json()["status"] == "error"


def test_promtool_query_instant_against_the_service(service, prometheus_binaries):
    url = str(service.base_url).rstrip("/")
    ok = subprocess.run(["promtool", "query", "instant", url, SELECTOR], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert 'helios_forecast_value{customer="arena", horizon="1h", metric="concurrent_users"} =>' in ok.stdout
    wrong = subprocess.run(["promtool", "query", "instant", url, 'helios_forecast_value{customer="arena"}'],
                           capture_output=True, text=True, timeout=60)
    assert wrong.returncode != 0 and "2 series match" in wrong.stderr


def test_metrics_exports_helios_series_beside_bentomls(service):
    deadline = time.monotonic() + 60
    while True:
        text = service.get("/metrics").text
        if 'helios_recommendation{customer="arena",service="game-server"}' in text:
            break
        assert time.monotonic() < deadline, text[-2000:]
        time.sleep(1)
    for name in ("helios_forecast_value", "helios_forecast_lower", "helios_forecast_upper", "helios_anomaly_score"):
        assert f'{name}{{customer="arena"' in text
    assert "bentoml_service_request" in text


def test_schemathesis_finds_no_server_error(service, tmp_path):
    """Property-based requests from the service's own OpenAPI document, bounded in count and time."""
    url = str(service.base_url).rstrip("/")
    run = subprocess.run(
        [str(Path(sys.executable).with_name("schemathesis")), "run", f"{url}/docs.json", "--checks", "not_a_server_error",
         "--max-examples", "40", "--seed", "7", "--request-timeout", "20"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout[-4000:]
    assert "passed" in run.stdout


def test_a_multipart_body_is_refused_with_415(service):
    response = service.post("/detect", content=b"{}", headers={"Content-Type": "multipart/form-data"})
    assert response.status_code == 415 and "application/json" in response.text


def test_a_posted_tournament_raises_the_forecast_over_its_window(service):
    before = service.post("/predict", json={"metric": "concurrent_users", "horizon": 60}).json()
    start = datetime.fromisoformat(before["origin"]) + timedelta(minutes=5)
    posted = service.post("/events", json={"name": "Flash Tournament", "start": start.isoformat(),
                                           "duration_hours": 3, "multiplier": 3.0})
    assert posted.status_code == 200, posted.text
    assert "Flash Tournament" in {e["name"] for e in posted.json()["upcoming"]}
    after = service.post("/predict", json={"metric": "concurrent_users", "horizon": 60}).json()
    assert "Flash Tournament" in after["events"]
    assert after["value"] > 1.5 * before["value"]
    bad = service.post("/events", json={"name": "x", "start": start.isoformat(), "duration_hours": 1,
                                        "multiplier": 2, "metrics": ["mana_pool"]})
    assert bad.status_code == 404 and "mana_pool" in bad.text
    negative = service.post("/events", json={"name": "x", "start": start.isoformat(), "duration_hours": -1, "multiplier": 2})
    assert negative.status_code == 400 and "duration_hours" in negative.text
    too_slow = service.post("/events", json={"name": "x", "start": start.isoformat(), "duration_hours": 1,
                                             "multiplier": 2, "ramp_minutes": 45})
    # A rule across fields is answered in its own words, which name the fields.
    assert too_slow.status_code == 400
    assert too_slow.json() == {"error": "tenant 'arena': event 'x': ramp_minutes 45 twice over is longer than its 1 hours"}


def test_a_grafana_annotation_is_stored_and_a_malformed_or_unknown_metric_one_is_refused_storing_nothing(
        service, embedded_store):
    # Two days back: inside the detector's history, and far from the incidents other tests inject around now.
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=2)
    millis = int(start.timestamp() * 1000)
    grafana = {"time": millis, "timeEnd": millis + 15 * 60_000, "tags": ["deploy"], "text": "checkout v2.3",
               "dashboardUID": "ops", "panelId": 4}
    posted = service.post("/annotations", json=grafana)
    assert posted.status_code == 200, posted.text
    assert posted.json() == {
        "tenant": "arena",
        "posted": {"time": start.isoformat().replace("+00:00", "Z"),
                   "time_end": (start + timedelta(minutes=15)).isoformat().replace("+00:00", "Z"),
                   "kind": "deploy", "text": "checkout v2.3", "tags": ["deploy"], "metrics": [],
                   "replicas_before": None, "replicas_after": None},
        "window_end": (start + timedelta(minutes=15)).isoformat(),
    }
    stored = embedded_store.changes_after("arena")
    assert [change["text"] for _, change in stored][-1:] == ["checkout v2.3"]

    backwards = service.post("/annotations", json=grafana | {"text": "backwards", "timeEnd": millis - 60_000})
    assert backwards.status_code == 400
    assert backwards.json() == {"error": f"tenant 'arena': time_end (Grafana's timeEnd) "
                                         f"{(start - timedelta(minutes=1)).isoformat()} must be after time {start.isoformat()}"}
    unknown = service.post("/annotations", json=grafana | {"text": "unknown", "metrics": ["mana_pool"]})
    assert unknown.status_code == 404 and "mana_pool" in unknown.json()["error"]
    assert embedded_store.changes_after("arena") == stored


def test_an_events_scorecard_is_written_by_the_cli_logged_to_mlflow_and_answered_over_http(service):
    from click.testing import CliRunner

    from helios_pipelines.cli import main

    now = datetime.now(UTC)
    drill = {"name": "Live Drill", "start": (now - timedelta(hours=1)).isoformat(), "duration_hours": 4, "multiplier": 1.5}
    assert service.post("/events", json=drill).status_code == 200
    running = service.get("/events/Live Drill/scorecard")
    assert running.status_code == 409 and "event 'Live Drill' of tenant 'arena' is still running" in running.json()["error"]
    unknown = service.get("/events/Finals/scorecard")
    assert unknown.status_code == 404 and "tenant 'arena' has no event 'Finals'" in unknown.json()["error"]
    not_scored = service.get("/events/Weekend Tournament/scorecard")
    assert not_scored.status_code == 409 and "no scorecard yet" in not_scored.json()["error"]

    result = CliRunner().invoke(main, ["--config-dir", str(FIXTURE_TENANTS), "events", "scorecard", "arena",
                                       "Weekend Tournament", "--no-alert"])
    assert result.exit_code == 0, result.output
    assert "under-provisioned pod-minutes" in result.output and "reactive HPA" in result.output
    body = service.get("/events/Weekend Tournament/scorecard").json()
    assert body["tenant"] == "arena" and body["event"] == "Weekend Tournament"
    assert datetime.fromisoformat(body["end"]) <= datetime.now(UTC) and len(body["steps"]) == 8 * 60 // 5  # 5-minute steps
    assert set(body["helios"]) == set(body["reactive"]) >= {"under_provisioned_pod_minutes", "cost"}
    runs = Tracker().client.search_runs(
        [Tracker().experiment_id("arena")], filter_string="tags.event = 'Weekend Tournament'")
    assert runs and "scorecard.png" in [a.path for a in Tracker().client.list_artifacts(runs[0].info.run_id)]


def test_a_learned_peak_is_scored_by_the_cli_and_answered_over_http_by_its_name(service):
    from click.testing import CliRunner

    from helios_pipelines.cli import main
    from helios_pipelines.core.ops.scorecard_store import learned_schedule

    # Arena's champion planner learned its daily evening peak (8 days of history: no weekly one).
    (daily,) = learned_schedule(Tracker(), "arena").peaks
    unknown = service.get("/events/Finals/scorecard")
    assert unknown.status_code == 404 and daily.name in unknown.json()["error"]
    listed = CliRunner().invoke(main, ["--config-dir", str(FIXTURE_TENANTS), "events", "peaks", "arena"])
    assert listed.exit_code == 0, listed.output
    assert "1 learned peak(s) in concurrent_users" in listed.output and f"  {daily.name}: " in listed.output

    scored = CliRunner().invoke(main, ["--config-dir", str(FIXTURE_TENANTS), "events", "scorecard", "arena",
                                       daily.name, "--no-alert", "--no-mlflow"])
    assert scored.exit_code == 0, scored.output
    assert f"arena · {daily.name} (learned_peak)" in scored.output
    body = service.get(f"/events/{daily.name}/scorecard").json()
    assert (body["event"], body["kind"]) == (daily.name, "learned_peak")
    assert datetime.fromisoformat(body["end"]) <= datetime.now(UTC) and len(body["steps"]) == daily.minutes // 5
