# Two commands for a newcomer: `make demo` and `make test`. Both set up everything first
# (idempotent: a second run only re-installs when a requirements file changed).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# The real Istio CRD schemas: the shared reference folder when it sits beside the checkout,
# else the copy tools/kubeenv/build.sh cuts out of the istio.io/istio module (make setup).
SANDBOX_CRDS ?= $(if $(wildcard ../shared/istio/virtualservices.crd.yaml),$(abspath ../shared/istio),$(abspath .cache/crds))
export SANDBOX_CRDS

.PHONY: setup test lint demo clean system-packages local-services kubeenv

setup: $(STAMP) system-packages local-services kubeenv

# Debian packages the tests use: Prometheus (the sandbox's), docker-compose 1.29 (validates
# docker-compose.yaml without an engine), chromium (the browser test of the Airflow UI) and
# etcd-server (the real control plane's store). Each is `command:package`.
SYSTEM_COMMANDS := prometheus:prometheus docker-compose:docker-compose chromium:chromium etcd:etcd-server
system-packages:
	@missing=""; for pair in $(SYSTEM_COMMANDS); do command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $$missing; \
	fi

# The real control plane for tests: kube-apiserver and istioctl built from Go modules with the
# machine's Go (cached by pin; see tools/kubeenv/build.sh), etcd from Debian.
kubeenv: system-packages
	@bash tools/kubeenv/build.sh

# PostgreSQL and Redis on loopback (the Celery test's metadata DB and broker): installed from
# Debian's packages and started when not answering; see tools/local_services.sh.
local-services: system-packages
	@bash tools/local_services.sh

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -e .
	@# The build leaves an egg-info beside the package; plugins/ is on sys.path, so Airflow
	@# would find the plugin's entry point twice. The installed dist-info is the one to keep.
	rm -rf plugins/*.egg-info
	@touch $@

lint: setup
	$(PY) -m ruff check .

# Two pytest-xdist workers, a test file each at a time (module fixtures stay in one worker):
# most end-to-end time is waiting on bakes, so two files wait side by side.
PYTEST_WORKERS ?= 2
test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile

demo: setup
	$(PY) -m tools.release_demo

clean:
	rm -rf $(VENV) .sandbox* .pytest_cache .ruff_cache
