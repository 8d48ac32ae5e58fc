# llmrec — the targets the README names.
#   make demo    set up, then run the whole retraining story on the bundled data
#   make test    set up, then run the test suite
#   make setup   virtual environment + everything llmrec needs (CPU torch by default; GPU=1 for CUDA)
#   make up / down                     local stack (Prefect + MLflow on sqlite, the runner serving retrain and the daily monitor)
#   make prodlike-up / prodlike-down   production-like stack (PostgreSQL + S3 on loopback, see infra/README.md)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
GPU ?= 0

ifeq ($(GPU),1)
  # PyPI's Linux x86_64 torch wheel is the CUDA build.
  TORCH ?= torch==2.13.0
  TORCH_ARGS ?=
  EXTRAS ?= dev,gpu
else
  # A CPU-only build, chosen deliberately: a plain `torch` would pull a multi-GB CUDA build.
  # Use the local CPU wheel where pip's find-links has one (our CI machines), else PyTorch's CPU index.
  TORCH ?= torch==2.13.0
  TORCH_ARGS ?= $(if $(wildcard /opt/wheels/torch-*+cpu*.whl),,--index-url https://download.pytorch.org/whl/cpu)
  EXTRAS ?= dev
endif

export DO_NOT_TRACK := 1
export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := 1
export GX_ANALYTICS_ENABLED := false
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup demo test mlflow-ui up down prodlike-up prodlike-down prodlike-status pg-server bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed-$(GPU): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install $(TORCH) $(TORCH_ARGS)
	$(BIN)/pip install -e ".[$(EXTRAS)]" -c constraints.txt
	touch $@

setup: $(VENV)/.installed-$(GPU)  ## virtual environment with everything installed

demo: setup  ## the full retraining story on the bundled default data and model
	$(BIN)/llmrec demo

test: setup  ## lint (ruff) and the test suite
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

mlflow-ui: setup  ## browse runs and registered models at http://127.0.0.1:5000
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000 --workers 1

up: setup  ## local stack: Prefect server + UI (:4200), MLflow server + UI (:5000), the runner serving the retrain and monitor deployments
	infra/local/stack.sh up

down:  ## stop exactly what `make up` started
	infra/local/stack.sh down

prodlike-up: setup pg-server  ## production-like stack: Prefect + MLflow on a private PostgreSQL, S3 (moto) for artifacts and DVC
	infra/prodlike/stack.sh up

prodlike-down:  ## stop exactly what `make prodlike-up` started and delete its (ephemeral) data
	infra/prodlike/stack.sh down

prodlike-status:
	infra/prodlike/stack.sh status

# Debian's PostgreSQL server binaries, installed only when missing (root: apt-get; otherwise says how).
# No default cluster is created or started: the production-like stack runs its own private one.
pg-server:
	@if ls /usr/lib/postgresql/*/bin/initdb > /dev/null 2>&1 || command -v initdb > /dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get > /dev/null; then \
	  mkdir -p /etc/postgresql-common; \
	  [ -f /etc/postgresql-common/createcluster.conf ] || echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql > /dev/null; \
	else echo "PostgreSQL server binaries are missing: sudo apt-get install -y postgresql (or set PG_BIN)"; exit 1; fi

bench: setup  ## benchmarks -> bench/results/*.json + *.md
	$(BIN)/python bench/train_throughput.py
	$(BIN)/python bench/ingest_validate.py --rows 1000000 --rows 4000000
	$(BIN)/python bench/serving_latency.py
	$(BIN)/python bench/drift_speed.py
	$(BIN)/python bench/scoring_speed.py
	$(BIN)/python bench/hybrid_quality.py

clean:  ## remove pipeline outputs, the local MLflow store and the demo data (keeps the venv)
	rm -rf outputs mlflow.db mlartifacts data/synthetic
