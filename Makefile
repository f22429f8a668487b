# kubetrade — two commands on a fresh clone: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
KT := $(VENV)/bin/kubetrade
STAMP := $(VENV)/.installed
PIP_FLAGS ?= -q --disable-pip-version-check

.PHONY: setup run test test-all lint format compile bench images kind-load kind-e2e clean help

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) --upgrade "pip>=24"
	$(PY) -m pip install $(PIP_FLAGS) -c constraints.txt -e ".[test,lint]"
	@touch $@

setup: $(STAMP)  ## create .venv and install pinned dependencies (constraints.txt)

run: setup  ## run the whole pipeline locally on the embedded real data
	$(KT) run

test: setup  ## run the test suite (slow tests excluded; see test-all)
	$(PY) -m pytest -q -m "not slow"

test-all: setup  ## every test, including the slow ones
	$(PY) -m pytest -q

lint: setup  ## ruff + mypy
	$(VENV)/bin/ruff check src tests components pipelines bench
	$(VENV)/bin/ruff format --check src tests components pipelines bench
	$(VENV)/bin/mypy

format: setup
	$(VENV)/bin/ruff format src tests components pipelines bench
	$(VENV)/bin/ruff check --fix src tests components pipelines bench

compile: setup  ## compile the pipeline to pipelines/compiled/kubetrade_training.yaml
	$(KT) compile --output pipelines/compiled/kubetrade_training.yaml

bench: setup  ## benchmarks against peer libraries; results in bench/results/
	$(PY) -m pip install $(PIP_FLAGS) -c constraints.txt -e ".[bench]"
	$(PY) -m pip install $(PIP_FLAGS) --no-deps finrl==0.3.7  # its env module only; its extras are heavy
	$(PY) bench/run_all.py

clean:  ## remove run outputs (keeps .venv)
	rm -rf runs .pytest_cache .mypy_cache .ruff_cache
