"""Retention: each customer's old history (and pushed samples, and the pushed series left without any)
deleted as its plan says."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import aliased

from helios_pipelines.core.ops import plans
from helios_pipelines.core.ops.store.base import StoreBase
from helios_pipelines.core.ops.store.schema import (
    PENDING,
    AlertEpisode,
    Anomaly,
    Customer,
    OutboxRow,
    Prediction,
    PushSample,
    PushSeries,
    utcnow,
)


class RetentionQueries(StoreBase):
    def apply_retention(self, now: datetime | None = None) -> dict[str, dict[str, int]]:
        """Delete each customer's predictions, pushed samples, closed anomaly and alert episodes and
        finished alerts older than its plan keeps, and the pushed series (label sets) left without a
        sample. Open episodes and pending alerts are kept whatever their age: they are still live.
        """
        now = now or utcnow()
        removed: dict[str, dict[str, int]] = {}
        with self.transaction() as session:
            for customer in session.scalars(select(Customer)):
                cutoff = now - timedelta(days=plans.plan(customer.plan).retention_days)
                counts = {
                    "predictions": session.execute(delete(Prediction).where(
                        Prediction.customer_id == customer.id, Prediction.timestamp < cutoff)).rowcount,
                    "anomalies": session.execute(delete(Anomaly).where(
                        Anomaly.customer_id == customer.id, Anomaly.resolved_at.is_not(None),
                        Anomaly.resolved_at < cutoff)).rowcount,
                    "alert_episodes": session.execute(delete(AlertEpisode).where(
                        AlertEpisode.customer_id == customer.id, AlertEpisode.resolved_at.is_not(None),
                        AlertEpisode.resolved_at < cutoff)).rowcount,
                    "alerts": session.execute(delete(OutboxRow).where(
                        OutboxRow.customer_id == customer.id, OutboxRow.status != PENDING,
                        OutboxRow.created_at < cutoff)).rowcount,
                    "pushed_samples": session.execute(delete(PushSample).where(
                        PushSample.series_id.in_(select(PushSeries.id).where(PushSeries.customer_id == customer.id)),
                        PushSample.timestamp < int(cutoff.timestamp() * 1000))).rowcount,
                    "pushed_series": session.execute(delete(PushSeries).where(
                        PushSeries.id.in_(_emptied_series(customer.id)))).rowcount,
                }
                removed[customer.slug] = counts
        return removed


def _emptied_series(customer_id):
    """The customer's pushed series without a sample, skipping any a concurrent push holds: a push
    that is adding samples to a series locks it (its samples' foreign key), and deleting it would
    cascade to them once that push commits. A push that looked the series up but has not yet inserted
    fails on the foreign key and runs again, creating the series afresh (``PushQueries.add_pushed``)."""
    series = aliased(PushSeries)
    has_samples = select(PushSample.series_id).where(PushSample.series_id == series.id).exists()
    return (select(series.id).where(series.customer_id == customer_id, ~has_samples)
            .with_for_update(skip_locked=True))
