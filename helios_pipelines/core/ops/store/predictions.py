"""Served models, their predictions, and the actuals joined to them later."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from helios_pipelines.core.ops.store.base import StoreBase
from helios_pipelines.core.ops.store.schema import ModelRecord, Prediction, utcnow


class PredictionQueries(StoreBase):
    def model_id(self, session: Session, customer_id: uuid.UUID, name: str, version: str, model_type: str,
                 kind: str | None = None) -> uuid.UUID:
        """The ``models`` row of a served MLflow version, created the first time it predicts."""
        self.insert_ignoring_duplicates(
            session, ModelRecord,
            [{"id": uuid.uuid4(), "customer_id": customer_id, "name": name, "version": str(version),
              "model_type": model_type, "kind": kind, "model_path": f"models:/{name}/{version}",
              "trained_at": utcnow(), "is_active": True}],
            ["customer_id", "name", "version"],
        )
        return session.scalar(select(ModelRecord.id).where(
            ModelRecord.customer_id == customer_id, ModelRecord.name == name, ModelRecord.version == str(version)))

    def insert_predictions(self, rows: list[dict], session: Session | None = None) -> int:
        """Bulk insert of prediction rows (``customer_id`` and ``model_id`` already resolved); a
        forecast already recorded (same tenant, metric, horizon and origin) is skipped. Returns how
        many were new."""
        if not rows:
            return 0
        unique = ["customer_id", "metric_name", "horizon_minutes", "issued_at"]
        if session is not None:
            return self.insert_ignoring_duplicates(session, Prediction, rows, unique)
        with self.transaction() as own:
            return self.insert_ignoring_duplicates(own, Prediction, rows, unique)

    # ---- actuals -----------------------------------------------------------------------------
    def predictions_awaiting_actuals(self, session: Session, customer_id: uuid.UUID, since: datetime,
                                     until: datetime) -> list[tuple[int, str, datetime]]:
        """(id, metric, target time) of predictions without an actual whose target is in [since, until]."""
        return [tuple(row) for row in session.execute(
            select(Prediction.id, Prediction.metric_name, Prediction.timestamp).where(
                Prediction.customer_id == customer_id,
                Prediction.actual_value.is_(None),
                Prediction.timestamp <= until,
                Prediction.timestamp >= since,
            )
        )]

    def record_actuals(self, session: Session, updates: list[dict]) -> None:
        """Set ``actual_value`` and ``seasonal_naive_value`` of the predictions named by ``id``."""
        if updates:
            session.execute(update(Prediction), updates)

    def predictions_with_actuals(self, customer_id: uuid.UUID, start: datetime, end: datetime) -> list[tuple]:
        """(metric, horizon minutes, target time, predicted, actual, lower, upper, interval level,
        seasonal-naive value) of predictions with a known actual whose target is in [start, end)."""
        with self.transaction() as session:
            return [tuple(row) for row in session.execute(
                select(Prediction.metric_name, Prediction.horizon_minutes, Prediction.timestamp,
                       Prediction.predicted_value, Prediction.actual_value, Prediction.lower_value,
                       Prediction.upper_value, Prediction.interval_level, Prediction.seasonal_naive_value).where(
                    Prediction.customer_id == customer_id,
                    Prediction.actual_value.is_not(None),
                    Prediction.timestamp >= start,
                    Prediction.timestamp < end,
                )
            )]
