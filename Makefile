# The front door: `make run` serves, `make test` checks everything. `make help` lists the rest.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP_RUN := $(VENV)/.installed-run
STAMP_DEV := $(VENV)/.installed-dev
PROTOS := $(wildcard proto/eventbus/v1/*.proto)
ARGS ?=
# The suites `make test` runs a second time on PostgreSQL (a fresh schema per test).
PG_TESTS := tests/store tests/grpc tests/http tests/delivery tests/hooks tests/rest tests/metrics tests/config tests/observability tests/chaos \
	tests/scenarios plugins/eventbus-rdstation/tests

.DEFAULT_GOAL := help
.PHONY: help run test test-postgres lint proto proto-check pytest bench chaos clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# A new or changed bundled plugin reinstalls too (its pyproject.toml is newer than the stamp).
$(STAMP_RUN): pyproject.toml $(wildcard plugins/*/pyproject.toml) | $(PY)
	$(PY) -m pip install --quiet -e '.[postgres]' $(foreach plugin,$(wildcard plugins/*/),-e $(plugin))
	@touch $@

$(STAMP_DEV): pyproject.toml $(STAMP_RUN)
	$(PY) -m pip install --quiet -e '.[dev,postgres]'
	@touch $@

run: $(STAMP_RUN) ## Create .venv, install eventbus (with PostgreSQL support) and the bundled plugins, serve on SQLite
	$(BIN)/eventbus serve $(ARGS)

test: $(STAMP_DEV) proto-check lint pytest ## Install the dev extras; proto drift check, ruff, mypy strict, the whole suite

lint: $(STAMP_DEV) ## ruff, and mypy --strict on eventbus/ and the bundled plugins' packages
	$(BIN)/ruff check eventbus tests benchmarks plugins
	$(BIN)/ruff format --check eventbus tests benchmarks plugins
	$(BIN)/mypy
	$(BIN)/mypy $(dir $(wildcard plugins/*/eventbus_*/__init__.py))

pytest: $(STAMP_DEV)
	$(BIN)/pytest $(ARGS)
	EVENTBUS_TEST_STORE=postgresql $(BIN)/pytest $(PG_TESTS) $(ARGS)

# Each test gets a fresh schema in the `test` database of the local server (127.0.0.1:5432); they skip when it is down.
test-postgres: $(STAMP_DEV) ## The PostgreSQL half of make test (PG_TESTS) on the local server
	EVENTBUS_TEST_STORE=postgresql $(BIN)/pytest $(PG_TESTS) $(ARGS)

proto: $(STAMP_DEV) ## Regenerate eventbus/v1/ from proto/
	PATH=$(abspath $(BIN)):$$PATH $(PY) -m grpc_tools.protoc -Iproto --python_out=. --grpc_python_out=. \
		--mypy_out=. --mypy_grpc_out=. $(PROTOS)

proto-check: $(STAMP_DEV) ## Fail when the committed eventbus/v1/ differs from what proto/ generates
	@rm -rf .proto-check && mkdir -p .proto-check
	@PATH=$(abspath $(BIN)):$$PATH $(PY) -m grpc_tools.protoc -Iproto --python_out=.proto-check \
		--grpc_python_out=.proto-check --mypy_out=.proto-check --mypy_grpc_out=.proto-check $(PROTOS) \
		>.proto-check.log 2>&1 || { cat .proto-check.log; rm -f .proto-check.log; exit 1; }
	@rm -f .proto-check.log
	@for f in .proto-check/eventbus/v1/*; do \
		cmp -s $$f eventbus/v1/$$(basename $$f) || { echo "proto drift: eventbus/v1/$$(basename $$f) is stale; run make proto"; rm -rf .proto-check; exit 1; }; \
	done
	@rm -rf .proto-check; echo "proto: generated code is up to date"

bench: $(STAMP_DEV) ## Run the benchmarks (BENCH_SCALE=0.2 for a quick pass); results in benchmarks/results/
	$(PY) -m benchmarks $(ARGS)

# The crash harness (tests/chaos/) on SQLite, then on a throwaway PostgreSQL cluster it also crashes; then the fuzz tests.
chaos: $(STAMP_DEV) ## Long crash run: 200 SIGKILLs per backend (CHAOS_KILLS, CHAOS_SECONDS, CHAOS_SEED), long fuzzing
	CHAOS_LONG=1 $(BIN)/pytest -s tests/chaos/test_crash_long.py $(ARGS)
	CHAOS_LONG=1 EVENTBUS_TEST_STORE=postgresql $(BIN)/pytest -s tests/chaos/test_crash_long.py $(ARGS)
	HYPOTHESIS_PROFILE=long $(BIN)/pytest tests/fuzz --timeout=1800 $(ARGS)

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .proto-check .pytest_cache .mypy_cache .ruff_cache
