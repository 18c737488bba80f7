# Two commands on a fresh clone: `make demo` (the main job on synthetic data) and `make test` (the test suite).
# Both create .venv and install torch (pinned, from pip's configured index) before the project. The CPU-only wheel:
# TORCH_INDEX="--index-url https://download.pytorch.org/whl/cpu"; GPU machines: make demo TORCH_SPEC="torch==2.13.0"
# TORCH_INDEX="--index-url https://download.pytorch.org/whl/cu128".
# `ubp` chooses the Dagster instance: DAGSTER_HOME when set, else dagster_home/ here for the demo and
# data/<source name>/dagster_home for a SOURCE.

PYTHON ?= python3.11
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
PORT ?= 3000
SOURCE ?=
BIN := $(VENV)/bin

.PHONY: setup browser postgres demo test test-all ui run bench clean

$(BIN)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check $(TORCH_INDEX) "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps recbole==1.2.1
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $@

setup: $(BIN)/.installed

# Debian's Chromium for the browser test (Playwright drives it; no browser download). Without root or apt the test
# is skipped with its reason on a developer's machine; on CI (CI=true) the failed install fails the run.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  (DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1)) || \
	  (echo "Chromium could not be installed here: the browser test will be skipped"; test -z "$$CI")

# Debian's PostgreSQL for the instance-storage tests (each test starts its own throw-away server on a local port).
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  (DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null 2>&1)) || \
	  (echo "PostgreSQL could not be installed here: the Postgres storage tests will be skipped"; test -z "$$CI")

demo: setup
	$(BIN)/ubp demo

test: setup browser postgres  # two workers: the tests are single-threaded, CI has two cores (879 s serial, 528 s)
	$(BIN)/pytest -q -m "not slow" -n 2

test-all: setup browser postgres
	$(BIN)/pytest -q

ui: setup
	$(BIN)/ubp ui --port $(PORT) $(if $(SOURCE),--source $(SOURCE))

run: setup
	@test -n "$(SOURCE)" || (echo "usage: make run SOURCE=/path/to/ubc_data" && exit 2)
	$(BIN)/ubp run --source $(SOURCE)

# bench_gru.py reads the demo's sequences: the demo runs first when they are missing (a fresh clone)
bench: setup
	@test -d data/demo/artifacts/user_sequences || $(BIN)/ubp demo
	$(BIN)/python bench/bench_ingest.py
	$(BIN)/python bench/bench_duplicates.py
	$(BIN)/python bench/bench_probe.py
	$(BIN)/python bench/bench_gru.py
	$(BIN)/python bench/bench_recommender.py
	$(BIN)/python bench/bench_channel_demo.py

clean:
	rm -rf data dagster_home/storage dagster_home/history dagster_home/schedules dagster_home/logs
