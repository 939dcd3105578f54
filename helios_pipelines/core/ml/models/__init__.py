"""Models: forecasters, anomaly detectors, the capacity planner, behind the contracts of ``base``.

XGBoost settings every XGBoost model here uses. (OpenMP's wait policy, which must be set before
xgboost loads, is the environment's: ``core/settings.py`` and the Makefile set it; importing a model
writes nothing to ``os.environ``.)
"""

XGB_THREADS = 2
