SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROTOS := $(shell find proto -name '*.proto' | sort)
# The git ref `buf breaking` compares proto/ with (a branch, tag or sha); see docs/contract.md.
BREAKING_AGAINST ?= HEAD~1

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@echo "==> [1/3] creating $(VENV) with $$($(PYTHON) --version 2>&1) ($(PYTHON))"
	$(PYTHON) -m venv $(VENV)
	@echo "==> [2/3] upgrading pip"
	$(BIN)/pip install --quiet --upgrade pip
	@echo "==> [3/3] installing the project and its dependencies (a few minutes the first time;"
	@echo "    pip prints each package as it goes)"
	@# The project is installed in editable mode: services/ and the generated code in gen/
	@# (the `shop` and `buf` packages, see pyproject.toml) import from this checkout.
	$(BIN)/pip install --progress-bar on -e '.[dev]'
	@rm -f "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/shop_gen.pth"
	touch $(STAMP)
	@echo "==> $(VENV) is ready"

.PHONY: venv
venv: $(STAMP) ## Create .venv and install everything (idempotent)

.PHONY: run
run: venv ## Start the whole local mesh (embedded NATS + PostgreSQL + 3 services); Ctrl-C stops it
	$(PY) -m services.localmesh

.PHONY: demo-http
demo-http: venv ## The seed story over HTTP/JSON (Connect) against `make run`, with each step's curl
	$(PY) scripts/demo_http.py

.PHONY: demo
demo: venv ## Run the seed story (reject, top up, reserve, pay, refund) against `make run`
	GRPCURL="$(GRPCURL)" $(PY) scripts/demo.py

.PHONY: test
test: venv ## Run the whole test suite: everything below, then the chaos suite
	$(PY) -m pytest
	$(PY) -m pytest -m chaos tests/chaos

.PHONY: test-quick
test-quick: venv ## Everything but the chaos suite (unit, integration, contract, e2e, deploy)
	$(PY) -m pytest

.PHONY: chaos
chaos: venv ## Run the fault-injection suite (kills services, NATS, PostgreSQL; prints a table)
	$(PY) -m pytest -m chaos tests/chaos

.PHONY: test-unit
test-unit: venv ## Run only the unit tests (no servers)
	$(PY) -m pytest tests/unit

.PHONY: lint
lint: venv generate-check ## ruff, mypy --strict, buf lint, buf format, buf breaking, docs check
	$(BIN)/ruff check services tests scripts deploy/scripts bench
	$(BIN)/ruff format --check services tests scripts deploy/scripts bench
	$(BIN)/mypy
	$(BIN)/buf lint
	$(BIN)/buf format --exit-code -d
	$(PY) scripts/check_breaking.py $(BREAKING_AGAINST)
	$(PY) scripts/contract_docs.py --check

.PHONY: breaking
breaking: venv ## buf breaking: proto/ against BREAKING_AGAINST (default HEAD~1; any ref)
	$(PY) scripts/check_breaking.py $(BREAKING_AGAINST)

.PHONY: docs
docs: venv ## Regenerate the RPC and event table of docs/contract.md from proto/
	$(PY) scripts/contract_docs.py

.PHONY: fmt
fmt: venv ## Format Python and proto sources
	$(BIN)/ruff format services tests scripts deploy/scripts bench
	$(BIN)/ruff check --fix services tests scripts deploy/scripts bench
	$(BIN)/buf format -w

.PHONY: generate
generate: venv ## Regenerate gen/ from proto/ (messages, .pyi stubs, gRPC and Connect stubs)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(PY) scripts/generate.py --out gen

.PHONY: generate-check
generate-check: venv ## Fail if gen/ is stale with respect to proto/
	PATH="$(CURDIR)/$(BIN):$$PATH" $(PY) scripts/generate.py --check

.PHONY: bench
bench: $(VENV)/.bench-installed ## Benchmark the mesh against a bare gRPC echo (BENCH_SECONDS=20 per phase)
	$(PY) -m bench

$(VENV)/.bench-installed: $(STAMP)
	$(BIN)/pip install --quiet -e '.[bench]'
	touch $@

.PHONY: clean-data
clean-data: ## Wipe the local mesh's data folder (.data/)
	rm -rf .data
	@echo "removed .data/"

.PHONY: clean
clean: ## Remove the venv and caches (keeps .data/)
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

# Container image and Kubernetes (kind) targets: docs/deploy.md
include deploy/k8s.mk
