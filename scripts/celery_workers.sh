#!/usr/bin/env bash
# Start N dagster-celery workers for HELIOS_EXECUTOR=celery (default 2), each one process taking one
# step at a time from the broker (HELIOS_CELERY_BROKER, default the local RabbitMQ). They need the same
# DAGSTER_HOME (the instance's storage) and environment as the runs (HELIOS_CONFIG_DIR, MLflow, ...).
# Stops them all on Ctrl-C / SIGTERM. Usage: scripts/celery_workers.sh [N [NAME]] (workers NAME-1..N)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
count="${1:-2}"
name="${2:-helios}"
python="${PYTHON:-$here/.venv/bin/python}"
export PYTHONPATH="$here/deploy/dagster:$here${PYTHONPATH:+:$PYTHONPATH}"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait' INT TERM EXIT
for i in $(seq 1 "$count"); do
  "$python" -m celery -A dagster_celery.app worker --concurrency=1 --prefetch-multiplier=1 -Q dagster \
    --loglevel=INFO -n "$name-$i@%h" &
  pids+=($!)
done
wait
