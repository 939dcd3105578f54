"""The integration guide's metric keys (its ``GAMING_METRICS``), mapped onto Helios' own before the
tenant config's strict validation, so a file written as the guide shows loads, and a guide key with a
wrong value is an error naming that key. ``MetricConfig``'s docstring lists the mapping.

PromQL in ``prometheus_query`` and ``scale_trigger`` is read with ``promql-parser`` (a maintained
PromQL grammar), imported only when a config uses those keys.
"""

from __future__ import annotations


def _promql(text: str, key: str):
    import promql_parser  # the PromQL grammar; imported only by configs that use the guide's keys

    try:
        return promql_parser.parse(text)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{key}: '{text[:200]}' is not PromQL: {str(exc).splitlines()[0]}") from None


def _first_series(query: str, key: str) -> str:
    """The first metric a PromQL query reads (the guide's metrics name a query, not a series)."""
    import promql_parser

    names: list[str] = []
    promql_parser.walk(_promql(query, key), pre_visit=lambda node: names.append(node.name)
                       if isinstance(node, promql_parser.VectorSelector) and node.name else None)
    if not names:
        raise ValueError(f"{key}: '{query[:200]}' reads no metric; name the series with series:")
    return names[0]


def _guide_number(data: dict, key: str, positive: bool = False) -> float:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{key}: expected a number, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{key}: must be above 0, got {value!r}")
    return float(value)


def guide_metric_keys(data: dict) -> dict:
    """The integration guide's metric keys (its GAMING_METRICS) onto Helios' own; each wrong value is
    an error naming the guide's key. Giving both a guide key and the Helios key it maps to is an error."""
    from helios_pipelines.core.tenants.base import parse_duration  # tenants imports this module

    data = dict(data)

    def move(guide: str, own: str, value) -> None:
        if own in data:
            raise ValueError(f"{guide}: set {own} or the guide's {guide}, not both")
        data.pop(guide)
        data[own] = value

    if "prometheus_query" in data:
        query = data["prometheus_query"]
        if not isinstance(query, str) or not query.strip():
            raise ValueError(f"prometheus_query: expected a PromQL query, got {query!r}")
        data.setdefault("series", _first_series(query, "prometheus_query"))
        move("prometheus_query", "query", query)
    if "forecast_horizon" in data:
        horizon = data["forecast_horizon"]
        if isinstance(horizon, bool) or not isinstance(horizon, str | int):
            raise ValueError(f"forecast_horizon: expected a duration like 1h, got {horizon!r}")
        try:
            minutes = int(parse_duration(horizon).total_seconds() // 60)
        except ValueError as exc:
            raise ValueError(f"forecast_horizon: {exc}") from None
        if minutes <= 0:
            raise ValueError(f"forecast_horizon: must be at least a minute, got {horizon!r}")
        move("forecast_horizon", "forecast", {"horizons": [minutes]})
    if "anomaly_detection" in data:
        if not isinstance(data["anomaly_detection"], bool):
            raise ValueError(f"anomaly_detection: expected true or false, got {data['anomaly_detection']!r}")
        move("anomaly_detection", "anomaly", data["anomaly_detection"])
    if "warning_threshold" in data:
        move("warning_threshold", "warning_above", _guide_number(data, "warning_threshold"))
    if "critical_threshold" in data:
        move("critical_threshold", "critical_above", _guide_number(data, "critical_threshold"))
    if "alert_threshold_ms" in data:
        unit = data.get("unit", "ms")
        if unit != "ms":
            raise ValueError(f"alert_threshold_ms: the metric's unit is '{unit}', not ms")
        move("alert_threshold_ms", "critical_above", _guide_number(data, "alert_threshold_ms", positive=True))
        data["unit"] = "ms"
    if isinstance(data.get("scale_trigger"), str):
        import promql_parser

        text = data["scale_trigger"]
        expr = _promql(text, "scale_trigger")
        if not (isinstance(expr, promql_parser.BinaryExpr) and str(expr.op) in (">", ">=")
                and isinstance(expr.lhs, promql_parser.VectorSelector)
                and isinstance(expr.rhs, promql_parser.NumberLiteral)):
            raise ValueError(f"scale_trigger: expected '<series> > <number>', got '{text[:200]}'")
        data["scale_trigger"] = {"series": expr.lhs.name, "above": expr.rhs.val}
    return data
