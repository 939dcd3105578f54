"""Served models and their predictions."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from helios_pipelines.core.store.base import StoreBase
from helios_pipelines.core.store.schema import ModelRecord, Prediction, utcnow


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

