# rspark-operator: every target installs what it needs (pinned, cached under
# ~/.cache/rspark-operator) so `make dev` and `make test` work on a fresh machine.
SHELL := /bin/bash
VENV := .local/venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/.local/bin:$(PATH)

.PHONY: venv tools cluster-up cluster-down cluster-status dev test test-unit test-integration lint crds bench

venv:
	@bash hack/venv.sh

tools:
	@bash hack/tools.sh

cluster-up: venv tools
	@$(PY) -m tests.support.localcluster up

cluster-down: venv
	@$(PY) -m tests.support.localcluster down

cluster-status: venv
	@$(PY) -m tests.support.localcluster status

dev: venv tools
	@$(PY) -m tests.support.deploy

test: venv tools
	@$(PY) -m pytest tests

test-unit: venv
	@$(PY) -m pytest -m unit tests

test-integration: venv tools
	@$(PY) -m pytest -m integration tests

lint: venv
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .
	@$(VENV)/bin/mypy
