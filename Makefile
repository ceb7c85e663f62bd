# The front door: `make run` serves, `make test` checks everything. `make help` lists the rest.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP_RUN := $(VENV)/.installed-run
STAMP_DEV := $(VENV)/.installed-dev
PROTOS := $(wildcard proto/eventbus/v1/*.proto)
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help run test test-postgres lint proto proto-check pytest bench clean

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
	EVENTBUS_TEST_STORE=postgresql $(BIN)/pytest tests/store tests/grpc tests/http tests/delivery tests/hooks tests/rest $(ARGS)

# Each test gets a fresh schema in the `test` database of the local server (127.0.0.1:5432); they skip when it is down.
test-postgres: $(STAMP_DEV) ## The store contract, gRPC, HTTP, delivery and connector suites on the local PostgreSQL
	EVENTBUS_TEST_STORE=postgresql $(BIN)/pytest tests/store tests/grpc tests/http tests/delivery tests/hooks $(ARGS)

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

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .proto-check .pytest_cache .mypy_cache .ruff_cache
