import pytest

from serving.promql import QueryError, Sample, exposition, parse_selector, select, select_one, vector_response

SERIES = [
    Sample("helios_forecast_value", {"customer": "gaming-corp", "metric": "concurrent_users", "horizon": "1h"}, 41000.0),
    Sample("helios_forecast_value", {"customer": "gaming-corp", "metric": "concurrent_users", "horizon": "15m"}, 39000.0),
    Sample("helios_forecast_value", {"customer": "shopfast", "metric": "request_rate", "horizon": "1h"}, 310.5),
    Sample("helios_anomaly_score", {"customer": "gaming-corp", "metric": "concurrent_users"}, 0.12),
]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ('helios_forecast_value{customer="gaming-corp", metric="concurrent_users", horizon="1h"}', 41000.0),
        ("helios_forecast_value{customer='gaming-corp',metric=\"concurrent_users\",horizon!=\"1h\",}", 39000.0),
        ('helios_forecast_value{customer=~"shop.*"}', 310.5),
        ('helios_forecast_value{customer!~"gaming-.*"}', 310.5),
        ('{__name__="helios_anomaly_score"}', 0.12),
        ('helios_forecast_value{customer="gaming-corp", horizon=~"1h|15m", horizon!~"15.*"}', 41000.0),
    ],
)
def test_selectors_pick_exactly_one_series(query, expected):
    assert select_one(SERIES, query).value == expected


def test_regex_matchers_are_anchored_as_in_prometheus():
    assert select(SERIES, 'helios_forecast_value{customer=~"gaming"}') == []


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ('helios_forecast_value{customer="gaming-corp"}', "2 series match"),
        ('helios_forecast_value{customer="nobody"}', "no series matches"),
        ("sum(helios_forecast_value)", "unsupported query"),
        ("helios_forecast_value[5m]", "unsupported query"),
        ('helios_forecast_value{customer=~"("}', "invalid regular expression"),
        ('{customer!="x"}', "at least one non-empty matcher"),
        ('helios_forecast_value{customer="x" metric="y"}', "cannot parse label matcher"),
    ],
)
def test_nothing_or_several_series_is_an_error_never_an_empty_success(query, message):
    with pytest.raises(QueryError, match=message):
        select_one(SERIES, query)


def test_vector_envelope_and_exposition():
    body = vector_response([SERIES[0]], 1_700_000_000.0)
    assert body["status"] == "success" and body["data"]["resultType"] == "vector"
    [element] = body["data"]["result"]
    assert element["metric"]["__name__"] == "helios_forecast_value" and element["value"] == [1_700_000_000.0, "41000.0"]
    text = exposition(SERIES)
    assert text.count("# TYPE helios_forecast_value gauge") == 1
    assert 'helios_anomaly_score{customer="gaming-corp",metric="concurrent_users"} 0.12' in text
    assert parse_selector('x{a="q\\"uote"}')[1].value == 'q"uote'
