"""Models: forecasters, anomaly detectors, the capacity planner, behind the contracts of ``base``.

XGBoost settings every XGBoost model here uses. (OpenMP's wait policy, which must be set before
xgboost loads, is the environment's: ``core/settings.py`` and the Makefile set it; importing a model
writes nothing to ``os.environ``.)
"""

# One thread per booster: Helios runs its fits side by side instead (train_forecasters' metrics, the
# forecast suite's processes, Celery's steps), which keeps the cores as busy with less OpenMP overhead:
# gaming-corp's candidates took 81 CPU-s with four metrics at a time on one thread each against 103 with
# two on two threads (bench/results/train.md). The trees are identical for any thread count (hist). A
# served forecast predicts one row per lead time (gaming-corp's hour: 60 rows, within one 64-row block
# of xgboost's CPU predictor, so one thread either way).
XGB_THREADS = 1
