"""Celery settings of Helios' dagster-celery workers: dagster_celery's app imports this module when it
is on the path (scripts/celery_workers.sh puts it there), so workers and the executor
(helios_pipelines/defs/celery.py) use the same broker."""

import os

broker_url = os.environ.get("HELIOS_CELERY_BROKER") or "amqp://guest:guest@127.0.0.1:5672//"
result_backend = "rpc://"
# One step at a time per worker process, taken only when it can start: a long training step never
# holds a second one hostage.
worker_prefetch_multiplier = 1
# A step is acknowledged when it ends, and a worker process killed mid-step gives it back to the
# queue: another worker runs the step again (at least once; tests/pipeline/test_celery.py kills one).
task_acks_late = True
task_reject_on_worker_lost = True
