import pytest

from helios_pipelines.core.ops.exposition import Sample, exposition
from serving.promql import QueryError, Scalar, evaluate, instant_data, parse, reads_series, select

SERIES = [
    Sample("helios_forecast_value", {"customer": "gaming-corp", "metric": "concurrent_users", "horizon": "1h"}, 41000.0),
    Sample("helios_forecast_value", {"customer": "gaming-corp", "metric": "concurrent_users", "horizon": "15m"}, 39000.0),
    Sample("helios_forecast_value", {"customer": "shopfast", "metric": "request_rate", "horizon": "1h"}, 310.5),
    Sample("helios_forecast_upper", {"customer": "gaming-corp", "metric": "concurrent_users", "horizon": "1h"}, 45000.0),
    Sample("helios_anomaly_score", {"customer": "gaming-corp", "metric": "concurrent_users"}, 0.12),
]


def values(query: str) -> dict:
    """{labels without __name__ as a dict's items: value} of an instant evaluation."""
    result = evaluate(parse(query), SERIES)
    return {tuple((k, v) for k, v in labels if k != "__name__"): value for labels, value in result.items()}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ('helios_forecast_value{customer="gaming-corp", metric="concurrent_users", horizon="1h"}', [41000.0]),
        ("helios_forecast_value{customer='gaming-corp',metric=\"concurrent_users\",horizon!=\"1h\",}", [39000.0]),
        ('helios_forecast_value{customer=~"shop.*"}', [310.5]),
        ('helios_forecast_value{customer!~"gaming-.*"}', [310.5]),
        ('{__name__="helios_anomaly_score"}', [0.12]),
        ('helios_forecast_value{customer="gaming-corp", horizon=~"1h|15m", horizon!~"15.*"}', [41000.0]),
    ],
)
def test_selectors_match_as_in_prometheus(query, expected):
    assert sorted(values(query).values()) == expected


def test_regex_matchers_are_anchored_as_in_prometheus():
    assert select(SERIES, parse('helios_forecast_value{customer=~"gaming"}')) == []


def test_arithmetic_and_aggregations_follow_prometheus_label_rules():
    # Hand arithmetic: 41000 + 39000 = 80000; avg of the two = 40000; upper - value at 1h = 4000.
    assert values('sum(helios_forecast_value{customer="gaming-corp"})') == {(): 80000.0}
    assert values('avg by (customer) (helios_forecast_value)') == {(("customer", "gaming-corp"),): 40000.0,
                                                                   (("customer", "shopfast"),): 310.5}
    assert values("count without (horizon) (helios_forecast_value)") == {
        (("customer", "gaming-corp"), ("metric", "concurrent_users")): 2.0,
        (("customer", "shopfast"), ("metric", "request_rate")): 1.0}
    spread = evaluate(parse('helios_forecast_upper - helios_forecast_value{customer="gaming-corp"}'), SERIES)
    assert spread == {(("customer", "gaming-corp"), ("horizon", "1h"), ("metric", "concurrent_users")): 4000.0}
    assert values("1 - helios_anomaly_score") == {(("customer", "gaming-corp"), ("metric", "concurrent_users")): 0.88}
    assert values("helios_forecast_value > 40000") == {
        (("customer", "gaming-corp"), ("horizon", "1h"), ("metric", "concurrent_users")): 41000.0}
    assert values('-helios_forecast_value{customer="shopfast"}') == {
        (("customer", "shopfast"), ("horizon", "1h"), ("metric", "request_rate")): -310.5}
    assert evaluate(parse("1+1"), []) == Scalar(2.0)  # Grafana's "Save & test" query


def test_a_comparison_filter_keeps_the_metric_name_arithmetic_drops_it():
    [kept] = evaluate(parse("helios_anomaly_score < 1"), SERIES)
    assert dict(kept)["__name__"] == "helios_anomaly_score"
    [dropped] = evaluate(parse("helios_anomaly_score * 2"), SERIES)
    assert "__name__" not in dict(dropped)


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("rate(http_requests_total[5m])", "function 'rate'"),
        ("histogram_quantile(0.99, sum by (le) (x))", "function 'histogram_quantile'"),
        ("helios_forecast_value[5m]", "range vector selectors"),
        ("topk(3, helios_forecast_value)", "aggregation 'topk'"),
        ("helios_forecast_value and helios_anomaly_score", "operator 'and'"),
        ("helios_forecast_value offset 5m", "offset modifier"),
        ("helios_forecast_value * on(customer) group_left helios_anomaly_score", "group_left"),
        ('helios_forecast_value{customer=~"("}', "illegal regex"),
        ('{customer!="x"}', "at least one non-empty matcher"),
        ('helios_forecast_value{customer="x" metric="y"}', "cannot parse"),
        ("no_such_function(x)", "unknown function with name 'no_such_function'"),
        ("", "empty"),
        # The Rust parser's stack overflows (a segfault of the whole service) near 10,000 levels.
        ("(" * 10_000 + "1" + ")" * 10_000, "characters long"),
        ("(" * 1000 + "1" + ")" * 1000, "nests 1000 brackets deep"),
        ("1+" * 2000 + "1", "with 2000 operators"),
    ],
)
def test_what_is_not_evaluated_is_refused_naming_it(query, named):
    with pytest.raises(QueryError, match=named.replace("(", r"\(").replace(")", r"\)")):
        parse(query)


@pytest.mark.timeout(20)
def test_a_catastrophic_regex_is_matched_in_linear_time():
    """Python's backtracking engine needs ~2^n steps on this pattern; RE2 answers at once."""
    hostile = [Sample("helios_anomaly_score", {"metric": "a" * 5000 + "!"}, 1.0)]
    assert evaluate(parse('{metric=~"(([a-z_]+)+)+X"}'), hostile) == {}


def test_only_expressions_with_selectors_read_series():
    assert not reads_series(parse("1 + 1")) and reads_series(parse("1 - sum(helios_anomaly_score)"))


def test_vector_envelope_and_exposition():
    body = instant_data(evaluate(parse('helios_forecast_value{customer="shopfast"}'), SERIES), 1_700_000_000.0)
    assert body["resultType"] == "vector"
    [element] = body["result"]
    assert element["metric"]["__name__"] == "helios_forecast_value" and element["value"] == [1_700_000_000.0, "310.5"]
    assert instant_data(Scalar(2.0), 4.0) == {"resultType": "scalar", "result": [4.0, "2.0"]}
    text = exposition(SERIES)
    assert text.count("# TYPE helios_forecast_value gauge") == 1
    assert 'helios_anomaly_score{customer="gaming-corp",metric="concurrent_users"} 0.12' in text
    assert parse('x{a="q\\"uote"}').matchers.matchers[0].value == 'q"uote'
