# The quick start is two commands: 'make dev' and 'make test'. Both install what they need.
.DEFAULT_GOAL := help
SHELL := /bin/bash
VENV := .venv/bin
export PATH := $(CURDIR)/.venv/bin:$(PATH)

.PHONY: help bootstrap dev test lint typecheck security audit contracts drift monitoring pytest e2e quickstart generate testbed-up testbed-down bench image kind-up lock

help:
	@echo "make dev   - start the whole platform locally (test bed, migrations, CRDs, API, operator)"
	@echo "make test  - lint, type check, security scans, drift checks, unit + integration tests, e2e, make dev itself"

bootstrap:
	@bash scripts/bootstrap.sh

dev: bootstrap
	$(VENV)/dockyard dev

test: bootstrap lint typecheck security audit contracts drift monitoring pytest e2e quickstart

lint:
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .

typecheck:
	$(VENV)/mypy

security:
	$(VENV)/bandit -q -c pyproject.toml -r dockyard

audit:
	@bash scripts/audit.sh

contracts:
	$(VENV)/lint-imports

drift:
	$(VENV)/dockyard crds --check
	$(VENV)/dockyard openapi --check
	$(VENV)/dockyard events --check
	$(VENV)/dockyard reference --check

# The alert rules, with promtool built from the Go module proxy (cached).
monitoring:
	@bash scripts/monitoring.sh

# Two pytest-xdist workers (a file each at a time) share the one test bed: most of an
# integration test is waiting on the apiserver, PostgreSQL or a runner, so two halve the
# wall time on two cores. Tests marked `alone` get the test bed to themselves
# (tests/conftest.py). PYTEST_WORKERS=0 runs everything in one process.
PYTEST_WORKERS ?= 2
pytest:
	$(VENV)/pytest -q -p no:cacheprovider -n $(PYTEST_WORKERS) --dist loadfile --durations=15 --cov=dockyard --cov-report=term --cov-report=xml:coverage.xml tests/unit tests/integration

# Pin every dependency afresh in constraints.txt (commit the result).
lock:
	@bash scripts/lock.sh

generate: bootstrap
	$(VENV)/dockyard crds
	$(VENV)/dockyard openapi
	$(VENV)/dockyard events
	$(VENV)/dockyard reference

testbed-up: bootstrap
	$(VENV)/dockyard testbed up

testbed-down:
	$(VENV)/dockyard testbed down

# Every benchmark, each against a peer in the same run; writes bench/results/SUMMARY.md
# and fails when a goal is missed. Not part of 'make test' (it takes about half an hour).
bench: testbed-up
	$(VENV)/python -m bench

# The image with podman, FROM a bookworm base built here by mmdebstrap (docs/deployment.md);
# `docker build .` builds the same Dockerfile where Docker runs.
image:
	@bash scripts/image.sh

# The built image run against the test bed (tests/e2e); skipped, in one line, where podman
# cannot run containers.
e2e: bootstrap
	@bash scripts/e2e.sh

# `make dev` itself, on a test bed of its own (after the suites have stopped theirs): the
# platform starts, answers, and one Ctrl-C stops it (tests/quickstart).
quickstart: bootstrap
	$(VENV)/pytest -q -p no:cacheprovider tests/quickstart

kind-up:
	@bash scripts/kind-up.sh
