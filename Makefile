# The README's commands. Everything installs into ./.venv and keeps its state under ./.helios.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export HELIOS_HOME := $(CURDIR)/.helios
export DAGSTER_HOME := $(HELIOS_HOME)/dagster
export BENTOML_HOME := $(HELIOS_HOME)/bentoml
export MLFLOW_DISABLE_TELEMETRY := true
export BENTOML_DO_NOT_TRACK := true
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR := false
export GIT_PYTHON_REFRESH := quiet
# XGBoost's OpenMP threads spin while waiting; on a shared 2-core machine that costs up to 6x.
export OMP_WAIT_POLICY := PASSIVE
# Signs the demo tenant's webhook alerts (gaming-corp's secret_env); the demo's receiver checks it.
export HELIOS_WEBHOOK_SECRET ?= demo-secret-not-for-production
# gaming-corp's slack and pagerduty channels, pointed at the demo's local stand-ins (ports 9010, 9011).
export HELIOS_DEMO_SLACK_URL ?= http://127.0.0.1:9010/services/demo
export HELIOS_DEMO_PAGERDUTY_ROUTING_KEY ?= demo0pagerduty0routing0key000032
PORT ?= 3000
SHARED ?= $(CURDIR)/../shared

.PHONY: install demo test test-fast lint serve ui validate bench-forecast bench-anomaly bench-serve bench-serve-tenants bench-scale bench-capacity bench-scorecards bench-soak bench-train image-pipelines clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

validate: install
	$(BIN)/helios validate

demo: install
	$(BIN)/helios validate
	$(BIN)/helios db upgrade
	$(BIN)/helios tenants sync
	$(BIN)/helios run
	$(BIN)/helios events scorecard gaming-corp "Weekend Tournament"   # the last tournament vs a reactive HPA
	@echo ""
	@echo "Serving gaming-corp on http://127.0.0.1:$(PORT) (Ctrl-C stops), with the alert worker and a local"
	@echo "webhook receiver on :9009 (signed alerts land in $(HELIOS_HOME)/received-alerts.jsonl), Slack and PagerDuty"
	@echo "stand-ins on :9010 and :9011 (received-slack.jsonl, received-pagerduty.jsonl). From another shell:"
	@echo "  curl -s -X POST http://127.0.0.1:$(PORT)/predict -H 'Content-Type: application/json' -d '{\"metric\": \"concurrent_users\", \"horizon\": 60}'"
	@echo "  curl -s -X POST http://127.0.0.1:$(PORT)/detect -H 'Content-Type: application/json' -d '{\"metric\": \"game_latency_p99\"}'"
	@echo "  curl -s -X POST http://127.0.0.1:$(PORT)/recommend -H 'Content-Type: application/json' -d '{\"service\": \"game-server\", \"current_replicas\": 300}'"
	@echo "  $(BIN)/helios simulator inject gaming-corp --kind latency_spike --ago 5m   # an incident: a signed alert follows"
	@echo "  curl -s -X POST http://127.0.0.1:$(PORT)/events -H 'Content-Type: application/json' -d '{\"name\": \"Surprise Tournament\", \"start\": \"'$$(date -u -d '+10 min' +%FT%TZ)'\", \"duration_hours\": 0.5, \"expected_multiplier\": 50}'   # a capacity crossing (x50 needs over 90 % of what 3,000 replicas serve at any hour; x4 crossed only at peaks): capacity_warning to Slack, capacity_critical to PagerDuty, trigger within a minute, resolve with the same dedup_key once the event has passed (~40 min)"
	@echo "  $(BIN)/helios anomalies list gaming-corp; $(BIN)/helios alerts list --tenant gaming-corp"
	@echo "  $(BIN)/helios accuracy gaming-corp   # live accuracy, once the first served horizon (15 min) has passed"
	@echo "  curl -s 'http://127.0.0.1:$(PORT)/events/Weekend%20Tournament/scorecard'; $(BIN)/helios report gaming-corp --month $$(date -u -d "-7 days" +%Y-%m)   # the month of a week ago: it holds a weekly tournament"
	@echo ""
	$(BIN)/helios alerts receive --port 9009 & receiver=$$!; \
	  $(BIN)/helios alerts receive --kind slack --port 9010 & slack=$$!; \
	  $(BIN)/helios alerts receive --kind pagerduty --port 9011 & pagerduty=$$!; \
	  $(BIN)/helios alerts deliver --loop --interval 2 & worker=$$!; \
	  trap "kill $$receiver $$slack $$pagerduty $$worker 2>/dev/null" EXIT INT TERM; \
	  $(BIN)/helios serve gaming-corp --port $(PORT)

serve: install
	$(BIN)/helios serve $(or $(TENANT),gaming-corp) --port $(PORT)

test: install
	bash scripts/debian_package.sh install prometheus prometheus promtool
	$(BIN)/pytest

# The fast tier: pure core, in-process materialisation, no real process started (tests marked slow are skipped),
# on two pytest-xdist workers, each with its own HELIOS_HOME; --dist loadscope keeps a module on one worker and
# the modules that use the trained arena tenant together (tests/conftest.py: pytest_xdist_make_scheduler).
test-fast: install
	$(BIN)/pytest -m "not slow" -n 2 --dist loadscope

lint: install
	$(BIN)/ruff check helios_pipelines serving helios_sdk bench tests

ui: install
	@echo "Dagster UI on http://127.0.0.1:3001, MLflow UI on http://127.0.0.1:5000 (Ctrl-C stops both)"
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(HELIOS_HOME)/mlflow.db --host 127.0.0.1 --port 5000 & \
	  mlflow_pid=$$!; trap "kill $$mlflow_pid" EXIT INT TERM; \
	  $(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3001

bench-forecast: install
	mkdir -p bench/results bench/out
	# The suite (#18): every method over 27 real and simulated series; cached per backtest in bench/out/suite.
	$(BIN)/helios bench forecast-suite --shared $(SHARED) --folds $(or $(FOLDS),4) --jobs 2 \
	  --markdown bench/results/forecast_suite.md

bench-anomaly: install
	mkdir -p bench/out
	$(BIN)/helios bench anomaly --data $(SHARED)/data/nab/data --labels $(SHARED)/data/nab/labels/combined_windows.json \
	  --out bench/out/nab | tee bench/out/anomaly-latest.txt

bench-serve: install
	bash scripts/debian_package.sh install wrk
	$(BIN)/python bench/serve_bench.py --tenant $(or $(TENANT),gaming-corp) --seconds 10 --out bench/results/serve.md

bench-serve-tenants: install  ## the multi-tenant service's memory with 50 tenants (copies of a trained one)
	$(BIN)/python bench/serve_tenants.py --tenant $(or $(TENANT),shopfast) --tenants 50 --out bench/results/serve_tenants.md

bench-capacity: install
	$(BIN)/python bench/capacity_learning.py --out bench/results/capacity_learning.md

celery-workers: install  ## dagster-celery workers for HELIOS_EXECUTOR=celery (N=2)
	scripts/celery_workers.sh $(or $(N),2)

bench-scorecards: install
	$(BIN)/python bench/event_scorecards.py --out bench/results/event_scorecards.md

bench-soak: install
	$(BIN)/helios db upgrade
	$(BIN)/helios tenants sync
	$(BIN)/python bench/soak.py --minutes 10 --concurrency 16 --out bench/results/soak.md

bench-train: install
	# one tenant's whole pipeline through Dagster in process: wall time per asset and candidate, MASE per metric (#20.1)
	$(BIN)/python bench/train_bench.py --tenant $(or $(TENANT),gaming-corp) --label $(or $(LABEL),latest) --out bench/results/train.md

# 50 shopfast-shaped tenants through two Celery workers (RabbitMQ and PostgreSQL on the machine);
# the toy tenants of earlier rows: --shape toy --executor multiprocess.
bench-scale: install
	# the repository on the path: the bench starts dagster dev with the tests' harness (tests/harness/dagster_dev.py)
	PYTHONPATH=$(CURDIR) $(BIN)/python bench/scale_tenants.py --tenants 50 --shape shopfast --executor celery --workers 2

# The training platform's image (`helios platform render --image` names it), on a machine with Docker.
image-pipelines:
	docker build -f deploy/pipelines/Dockerfile -t $(or $(IMAGE),gcr.io/YOUR_PROJECT/helios-pipelines:latest) .

clean:
	rm -rf $(HELIOS_HOME) bench/out
