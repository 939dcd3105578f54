"""The ML side of core: features, models, backtests, training, MLflow tracking, review, drift, validation."""
