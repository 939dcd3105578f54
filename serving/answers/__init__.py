"""One module per answer a served tenant gives: predict, detect, recommend, events, and the series
exported to Prometheus. Each takes the tenant's :class:`serving.runtime.TenantRuntime` (its models,
recent history and step cache) and the step it answers for."""
