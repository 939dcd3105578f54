"""Models: forecasters, anomaly detectors, the capacity planner, behind the contracts of ``base``.

XGBoost settings every XGBoost model here uses. OpenMP threads that spin while waiting make a
2-thread XGBoost fit about 6x slower whenever the machine is busy with anything else (a Dagster run
next door, a test suite); passive waiting costs nothing when it is idle. It only takes effect if set
before OpenMP loads, i.e. before xgboost: importing any model module runs this first.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

XGB_THREADS = 2
