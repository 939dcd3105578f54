"""The CloudWatch source: against moto's server on small data; batching and pagination with
botocore's Stubber (moto ignores MaxDatapoints and never pages)."""

from __future__ import annotations

import socket

import boto3
import numpy as np
import pandas as pd
import pytest
from botocore.stub import Stubber

from helios_pipelines.core.sources import cloudwatch, make_source
from helios_pipelines.core.sources.base import SourceError
from helios_pipelines.core.sources.cloudwatch import CloudWatch
from helios_pipelines.core.tenants import TenantConfig

NOW = pd.Timestamp.now(tz="UTC").floor("1min")


@pytest.fixture(autouse=True)
def aws_env(monkeypatch):
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def tenant(metrics: dict | None = None, step: str = "1min", **source) -> TenantConfig:
    return TenantConfig.model_validate(
        {
            "id": "cwtest",
            "name": "CloudWatch test",
            "step": step,
            "source": {
                "type": "cloudwatch",
                "namespace": "Game/Servers",
                "dimensions": {"Fleet": "eu"},
                **source,
            },
            "metrics": metrics
            or {
                "players": {"series": "ActivePlayers", "forecast": {"horizons": [60]}},
                "requests": {"series": "Requests", "kind": "counter"},
            },
        }
    )


@pytest.fixture(scope="module")
def moto_url():
    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def put(url: str, name: str, values: dict[pd.Timestamp, float], dimensions=(("Fleet", "eu"),)) -> None:
    client = boto3.client("cloudwatch", endpoint_url=url, region_name="us-east-1")
    data = [
        {
            "MetricName": name,
            "Dimensions": [{"Name": k, "Value": v} for k, v in dimensions],
            "Timestamp": t.to_pydatetime(),
            "Value": v,
        }
        for t, v in values.items()
    ]
    client.put_metric_data(Namespace="Game/Servers", MetricData=data)


def test_gauge_and_counter_from_moto(moto_url):
    start = NOW - pd.Timedelta("30min")
    times = pd.date_range(start, periods=30, freq="1min")
    players = {t: 1000.0 + i for i, t in enumerate(times) if i != 7}  # minute 7 missing: a gap
    put(moto_url, "ActivePlayers", players)
    put(moto_url, "ActivePlayers", {t: 1.0 for t in times}, dimensions=(("Fleet", "us"),))  # another fleet
    put(moto_url, "Requests", {t: 120.0 for t in times})  # 120 requests a minute

    source = make_source(tenant(endpoint_url=moto_url), now=NOW)
    assert isinstance(source, CloudWatch)
    frame = source.fetch(start, start + pd.Timedelta("30min"))

    expected = np.array([1000.0 + i if i != 7 else np.nan for i in range(30)])
    np.testing.assert_array_equal(frame["players"].to_numpy(), expected)
    np.testing.assert_allclose(frame["requests"].to_numpy(), 2.0)  # Sum / 60 s
    assert source.list_metrics() == ["ActivePlayers", "Requests"]


def test_missing_metric_is_a_clear_error(moto_url):
    metrics = {"players": {"series": "NoSuchMetric", "forecast": {"horizons": [60]}}}
    with pytest.raises(
        SourceError, match=r"tenant 'cwtest', metric 'players'.*no data.*Game/Servers/NoSuchMetric"
    ):
        CloudWatch(tenant(metrics, endpoint_url=moto_url), now=NOW).fetch(NOW - pd.Timedelta("1h"), NOW)


def test_window_beyond_retention_is_refused():
    source = CloudWatch(tenant(), now=NOW, client=boto3.client("cloudwatch"))
    with pytest.raises(SourceError, match=r"keeps 60-second data for 15 days.*coarser step"):
        source.fetch(NOW - pd.Timedelta("16D"), NOW)
    five_minutes = CloudWatch(tenant(step="5min"), now=NOW, client=boto3.client("cloudwatch"))
    with pytest.raises(SourceError, match=r"keeps 300-second data for 63 days"):
        five_minutes.fetch(NOW - pd.Timedelta("64D"), NOW)


def stubbed(source_tenant: TenantConfig) -> tuple[CloudWatch, Stubber, list[dict]]:
    """A source whose client is stubbed; every GetMetricData request it makes is recorded."""
    client = boto3.client("cloudwatch")
    sent: list[dict] = []
    client.meta.events.register(
        "provide-client-params.cloudwatch.GetMetricData", lambda params, **_: sent.append(params)
    )
    return CloudWatch(source_tenant, now=NOW, client=client), Stubber(client), sent


def result(query_id: str, times: pd.DatetimeIndex, values, label: str = "x") -> dict:
    return {
        "Id": query_id,
        "Label": label,
        "Timestamps": list(times.to_pydatetime()),
        "Values": list(map(float, values)),
        "StatusCode": "Complete",
    }


def test_next_token_is_followed_and_pages_are_stitched():
    source, stubber, sent = stubbed(
        tenant({"players": {"series": "ActivePlayers", "forecast": {"horizons": [60]}}})
    )
    start = NOW - pd.Timedelta("1h")
    times = pd.date_range(start, periods=60, freq="1min")
    stubber.add_response(
        "get_metric_data",
        {"MetricDataResults": [result("m0", times[:25], range(25))], "NextToken": "page-2"},
    )
    stubber.add_response("get_metric_data", {"MetricDataResults": [result("m0", times[25:], range(25, 60))]})
    with stubber:
        frame = source.fetch(start, NOW)
    stubber.assert_no_pending_responses()
    assert "NextToken" not in sent[0] and sent[1]["NextToken"] == "page-2"
    np.testing.assert_array_equal(frame["players"].to_numpy(), np.arange(60.0))


def test_batches_stay_under_the_datapoint_and_query_limits():
    metrics = {f"m_{i}": {"series": f"Metric{i}", "forecast": {"horizons": [60]}} for i in range(7)}
    source, stubber, sent = stubbed(tenant(metrics))
    start = NOW - pd.Timedelta("14D")  # 20,160 one-minute points: 5 metrics fit in 100,800
    index = pd.date_range(start, NOW, freq="1min", inclusive="left")
    for ids in (["m0", "m1", "m2", "m3", "m4"], ["m5", "m6"]):
        stubber.add_response(
            "get_metric_data", {"MetricDataResults": [result(i, index, np.ones(len(index))) for i in ids]}
        )
    with stubber:
        frame = source.fetch(start, NOW)
    assert [len(call["MetricDataQueries"]) for call in sent] == [5, 2]
    for call in sent:
        points = (call["EndTime"] - call["StartTime"]).total_seconds() / 60 * len(call["MetricDataQueries"])
        assert points <= cloudwatch.MAX_DATAPOINTS_PER_CALL
    assert frame.notna().all().all() and frame.shape == (len(index), 7)


def test_query_limit_and_time_chunks(monkeypatch):
    monkeypatch.setattr(cloudwatch, "MAX_QUERIES_PER_CALL", 2)
    monkeypatch.setattr(cloudwatch, "MAX_DATAPOINTS_PER_CALL", 40)
    metrics = {f"m_{i}": {"series": f"Metric{i}", "forecast": {"horizons": [60]}} for i in range(3)}
    source, stubber, sent = stubbed(tenant(metrics))
    start = NOW - pd.Timedelta("60min")
    index = pd.date_range(start, NOW, freq="1min", inclusive="left")
    for chunk in (index[:40], index[40:]):
        for ids in (["m0"], ["m1"], ["m2"]) if len(chunk) == 40 else (["m0", "m1"], ["m2"]):
            stubber.add_response(
                "get_metric_data",
                {"MetricDataResults": [result(i, chunk, np.arange(len(chunk))) for i in ids]},
            )
    with stubber:
        frame = source.fetch(start, NOW)
    stubber.assert_no_pending_responses()
    assert [len(call["MetricDataQueries"]) for call in sent] == [1, 1, 1, 2, 1]
    assert sent[3]["StartTime"] == sent[0]["EndTime"]  # the next chunk starts where the last one ended
    np.testing.assert_array_equal(frame["m_0"].to_numpy(), np.r_[np.arange(40.0), np.arange(20.0)])


def test_expression_with_several_series_is_a_clear_error():
    metrics = {
        "players": {
            "series": "p",
            "query": "SEARCH('{Game/Servers,Fleet} ActivePlayers', 'Average')",
            "forecast": {"horizons": [60]},
        }
    }
    source, stubber, sent = stubbed(tenant(metrics))
    times = pd.date_range(NOW - pd.Timedelta("5min"), periods=5, freq="1min")
    stubber.add_response(
        "get_metric_data",
        {"MetricDataResults": [result("m0", times, range(5), "eu"), result("m0", times, range(5), "us")]},
    )
    with stubber, pytest.raises(SourceError, match=r"metric 'players'.*several series \(eu, us\)"):
        source.fetch(NOW - pd.Timedelta("5min"), NOW)
    assert sent[0]["MetricDataQueries"][0]["Expression"].startswith("SEARCH(")


def test_access_denied_is_a_source_error():
    source, stubber, _ = stubbed(tenant())
    stubber.add_client_error(
        "get_metric_data", "AccessDenied", "not authorized to perform cloudwatch:GetMetricData"
    )
    with (
        stubber,
        pytest.raises(SourceError, match=r"tenant 'cwtest', metrics players, requests.*AccessDenied"),
    ):
        source.fetch(NOW - pd.Timedelta("5min"), NOW)


def test_the_current_replica_count_is_an_auto_scaling_group_size_from_another_namespace():
    # The group's size lives in AWS/AutoScaling, not the tenant's namespace: a SEARCH expression reads it.
    from helios_pipelines.core.ml.models.capacity import observed_replicas
    from helios_pipelines.core.tenants import ScalingTarget

    query = ("SEARCH('{AWS/AutoScaling,AutoScalingGroupName} MetricName=\"GroupInServiceInstances\" "
             "AutoScalingGroupName=\"game-servers\"', 'Average', 60)")
    target = ScalingTarget(service="game-servers", metric="players", capacity_per_replica=100,
                           current_replicas={"series": "GroupInServiceInstances", "query": query})
    source, stubber, sent = stubbed(tenant())
    times = pd.date_range(NOW - pd.Timedelta("5min"), periods=6, freq="1min")
    stubber.add_response("get_metric_data", {"MetricDataResults": [result("m0", times, [12, 12, 13, 14, 14, 15])]})
    with stubber:
        assert observed_replicas(source, target, NOW, pd.Timedelta("1min")) == 15
    assert sent[0]["MetricDataQueries"][0]["Expression"] == query
