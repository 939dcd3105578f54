"""The Helios agent SDK: forward a customer's Prometheus metrics to Helios.

Importable on its own (standard library and httpx only), so it installs on customer machines without
the pipeline's dependencies::

    from helios_sdk import HeliosAgent

    agent = HeliosAgent(api_key="hel_...", endpoint="https://helios.example.com", customer_id="gaming-corp")
    agent.discover_prometheus("http://localhost:9090")
    agent.backfill(days=14)
    agent.start()
"""

from helios_sdk.agent import HeliosAgent, HeliosError
from helios_sdk.prometheus import PrometheusError, PrometheusReader

__all__ = ["HeliosAgent", "HeliosError", "PrometheusError", "PrometheusReader"]
