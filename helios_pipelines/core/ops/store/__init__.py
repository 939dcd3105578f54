"""The Helios store: customers, API keys, models, predictions, anomalies and the alert outbox.

``Store`` is the only place Helios issues SQL (``tests/test_boundaries.py`` holds every other module
to it). Callers open ``store.transaction()`` when several writes must commit together, pass the handle
it yields back to store methods, and may change attributes of rows the store returned inside it (the
unit of work writes them at commit); they never build a query. The package has one room per domain:

- ``schema``: the tables (the integration guide's SaaS schema, and where it differs), column types, row states;
- ``base``: engine, transactions, the dialect-portable insert, customer lookups;
- ``customers``: customers and API keys; ``predictions``: served models, predictions and actuals;
- ``anomalies``: anomaly and capacity-alert episodes; ``outbox``: the alert outbox;
- ``events``: posted events and once-per-step claims; ``pushed``: pushed samples;
- ``retention``: deleting old history; ``verdicts``: operators' verdicts on anomaly episodes;
- ``scorecards``: event scorecards.

Source of truth: the YAML registry owns configuration (metrics, webhooks, thresholds, plan). The
store owns state: keys, the enabled/disabled status, predictions, anomalies, the outbox, pushed samples,
event scorecards.
``sync_customers`` copies the registry's name, plan and metrics into ``customers`` and
``customer_metrics``; ``helios tenants add`` writes both at once.
"""

from __future__ import annotations

from helios_pipelines.core.ops.store.anomalies import EpisodeQueries
from helios_pipelines.core.ops.store.base import StoreBase, Transaction, database_url, make_engine
from helios_pipelines.core.ops.store.customers import CustomerQueries
from helios_pipelines.core.ops.store.errors import (
    CustomerDisabledError,
    DuplicateCustomerError,
    ForeignAnomalyError,
    StoreError,
    UnknownAnomalyError,
    UnknownCustomerError,
)
from helios_pipelines.core.ops.store.events import EventQueries, StepClaim
from helios_pipelines.core.ops.store.outbox import OutboxQueries
from helios_pipelines.core.ops.store.predictions import PredictionQueries
from helios_pipelines.core.ops.store.pushed import PushQueries
from helios_pipelines.core.ops.store.retention import RetentionQueries
from helios_pipelines.core.ops.store.scorecards import ScorecardQueries
from helios_pipelines.core.ops.store.verdicts import VerdictQueries

__all__ = [
    "CustomerDisabledError",
    "DuplicateCustomerError",
    "ForeignAnomalyError",
    "StepClaim",
    "Store",
    "StoreError",
    "Transaction",
    "UnknownAnomalyError",
    "UnknownCustomerError",
    "database_url",
    "make_engine",
]


class Store(CustomerQueries, PredictionQueries, EpisodeQueries, OutboxQueries, EventQueries, PushQueries,
            RetentionQueries, VerdictQueries, ScorecardQueries, StoreBase):
    """One database (SQLite or PostgreSQL); every method runs in its own transaction unless it is
    given one (``store.transaction()``)."""
