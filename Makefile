# Berth: the whole lifecycle in make targets. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= $(shell for p in python3 python3.13 python3.12 python3.11; do \
	$$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 && echo $$p && break; done)
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
EXTRAS_SERVE := sklearn
EXTRAS_TEST := test
# `docker compose` (v2) where it exists, else docker-compose (v1.29+).
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)

.PHONY: help venv serve test lint typecheck unit examples proto clean docs-config test-formats constraints monitoring-check bench soak

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-22s %s\n", $$1, $$2}'

$(BIN)/python:
	@test -n "$(PYTHON)" || { echo "Berth needs Python 3.11 or newer on PATH"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.serve: $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install -q -e ".[$(EXTRAS_SERVE)]" -c constraints.txt
	@touch $@

$(VENV)/.test: $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install -q -e ".[$(EXTRAS_TEST)]" -c constraints.txt
	@touch $@ $(VENV)/.serve

venv: $(VENV)/.serve ## create .venv and install Berth

serve: $(VENV)/.serve ## train and register the intent example (once), then serve it on $(HOST):$(PORT)
	$(BIN)/berth examples train intent --if-missing
	@echo
	@echo "Try it (in another terminal):"
	@echo "  curl -s http://$(HOST):$(PORT)/predict -H 'Content-Type: application/json' -d '{\"text\": \"I want to cancel my subscription\"}'"
	@echo "  curl -s http://$(HOST):$(PORT)/predict/batch -H 'Content-Type: application/json' -d '{\"instances\": [{\"text\": \"Hi, How are you?\"}, {\"text\": \"Great service!\"}]}'"
	@echo "  open http://$(HOST):$(PORT)/docs"
	@echo
	$(BIN)/berth serve intent --host $(HOST) --port $(PORT)

examples: $(VENV)/.serve ## train and register all four example models
	$(BIN)/berth examples train all

lint: $(VENV)/.test ## ruff on src/ and tests/
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck: $(VENV)/.test ## mypy --strict on src/
	$(BIN)/mypy

unit: $(VENV)/.test ## the pytest suite alone
	$(BIN)/pytest -q

test: $(VENV)/.test lint typecheck unit ## create .venv, install with test extras, lint, type-check and run the whole suite

proto: $(VENV)/.test ## regenerate the checked-in gRPC stubs from src/berth/server/proto/inference.proto
	$(BIN)/python -m grpc_tools.protoc -I src --python_out=src --pyi_out=src --grpc_python_out=src \
		src/berth/server/proto/inference.proto

# torch is not in the `test` extra (a CPU wheel is ~200 MB, a default one several GB of CUDA).
# This pin matches the CPU wheel in the CI machines' local wheel-house; elsewhere use e.g.
# TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cpu".
TORCH_SPEC ?= torch==2.13.0

test-formats: $(VENV)/.test ## install torch ($(TORCH_SPEC)) and mlflow, run the model-format and source tests
	$(BIN)/pip install -q "$(TORCH_SPEC)" "mlflow>=2.16" -c constraints.txt
	$(BIN)/pytest -q tests/test_format_*.py tests/test_source_*.py tests/test_registry_s3.py tests/test_registry_gcs.py

monitoring-check: ## promtool check/test of deploy/monitoring (needs Debian's prometheus package)
	cd deploy/monitoring && promtool check config prometheus.yml && promtool check rules alerts.yml \
		&& promtool test rules tests/alerts_test.yml

bench: $(VENV)/.serve ## benchmark Berth vs in-process limits, bare ASGI and peers (needs wrk; BENCH_SECONDS=2 for a quick run)
	@command -v wrk >/dev/null || { echo "make bench needs wrk: apt-get install -y wrk"; exit 1; }
	$(BIN)/python bench/run.py

SOAK_SECONDS ?= 180
soak: $(VENV)/.test ## steady soak (SOAK_SECONDS, 180 by default), overload, recovery: hey on loopback; not in `make test`
	@command -v hey >/dev/null || { echo "make soak needs hey: apt-get install -y hey"; exit 1; }
	$(BIN)/python -m tests.soak --seconds $(SOAK_SECONDS)

clean: ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist

docs-config: $(VENV)/.serve ## regenerate the settings table in docs/configuration.md
	$(BIN)/python -c "import pathlib; from berth.settings import settings_reference as ref; \
	p = pathlib.Path('docs/configuration.md'); text = p.read_text(); \
	p.write_text(text[:text.index('| Setting |')] + ref())"

constraints: $(VENV)/.test ## re-pin constraints.txt from the test environment after changing dependencies
	{ sed -n '1,3p' constraints.txt; $(BIN)/pip freeze --exclude-editable | grep -viE '^(torch|nvidia|triton==)'; } > constraints.new
	mv constraints.new constraints.txt

# --- deployment (issue 8): slow checks, separate from `make test` -------------------------------
.PHONY: docker-build docker-test

docker-build: $(VENV)/.serve ## build an image serving every production model of ./registry (TAG=berth:latest)
	PATH=/usr/bin:$$PATH $(BIN)/berth build --tag $(or $(TAG),berth:latest) $(if $(BASE_IMAGE),--base-image $(BASE_IMAGE))

docker-test: $(VENV)/.serve ## build the image offline and check a running container (needs root or a Docker engine)
	$(BIN)/python scripts/docker_test.py

.PHONY: k8s-test
k8s-test: ## lint and render the Helm chart, validate every manifest offline, refuse bad values
	scripts/k8s-test.sh

.PHONY: compose-test run-docker-services stop-docker-services
compose-test: $(VENV)/.serve ## bring up Berth and Prometheus with docker-compose.yml; Prometheus must scrape Berth
	$(BIN)/python scripts/compose_test.py

run-docker-services: ## start Berth, Prometheus, Grafana and PostgreSQL (docker compose; ./registry is served)
	$(COMPOSE) up -d --build
	@echo "Berth http://127.0.0.1:8000/docs  Prometheus http://127.0.0.1:9090  Grafana http://127.0.0.1:3000"

stop-docker-services: ## stop the compose stack (volumes are kept; `docker compose down -v` removes them)
	$(COMPOSE) down

# --- Kubernetes lifecycle (the seed tutorial's names). Needs kind, kubectl, helm and hey; not run by CI.
KIND_CLUSTER ?= berth
K8S_NAMESPACE ?= berth
K8S_RELEASE ?= berth
K8S_IMAGE ?= berth:local
K8S_VALUES ?=
K8S_PORT ?= 8080
K8S_MODEL ?= intent
K8S_PAYLOAD ?= {"text": "I want to cancel my subscription"}
KUBECTL := kubectl -n $(K8S_NAMESPACE)
.PHONY: run-kubernetes-server run-kubernetes-app monitor-kubernetes-app test-kubernetes-app \
	stop-kubernetes-app stop-kubernetes-server

run-kubernetes-server: ## create a local Kubernetes cluster with kind (KIND_CLUSTER=berth)
	kind create cluster --name $(KIND_CLUSTER) --wait 120s
	kubectl cluster-info --context kind-$(KIND_CLUSTER)

run-kubernetes-app: ## build the image of ./registry's production models, load it into kind, install the chart
	$(MAKE) docker-build TAG=$(K8S_IMAGE)
	kind load docker-image $(K8S_IMAGE) --name $(KIND_CLUSTER)
	helm upgrade --install $(K8S_RELEASE) deploy/helm/berth --namespace $(K8S_NAMESPACE) --create-namespace \
		--set image.repository=$(firstword $(subst :, ,$(K8S_IMAGE))) --set image.tag=$(lastword $(subst :, ,$(K8S_IMAGE))) \
		--set models[0].name=$(K8S_MODEL) $(if $(K8S_VALUES),-f $(K8S_VALUES)) --wait --timeout 5m
	$(KUBECTL) get pods -l app.kubernetes.io/instance=$(K8S_RELEASE)

monitor-kubernetes-app: ## show the release's deployment, pods, HPA and PDB, then watch the pods (Ctrl-C stops)
	$(KUBECTL) get deployment,pods,hpa,pdb,service -l app.kubernetes.io/instance=$(K8S_RELEASE)
	-$(KUBECTL) top pods -l app.kubernetes.io/instance=$(K8S_RELEASE)
	$(KUBECTL) get pods -l app.kubernetes.io/instance=$(K8S_RELEASE) --watch

test-kubernetes-app: ## helm test, then a 30 s load test with hey through a port-forward
	helm test $(K8S_RELEASE) --namespace $(K8S_NAMESPACE) --logs
	$(KUBECTL) port-forward service/$(K8S_RELEASE) $(K8S_PORT):8000 >/dev/null & pid=$$!; \
	trap 'kill $$pid' EXIT; sleep 3; \
	hey -z 30s -c 20 -m POST -T application/json -d '$(K8S_PAYLOAD)' \
		http://127.0.0.1:$(K8S_PORT)/models/$(K8S_MODEL)/predict

stop-kubernetes-app: ## uninstall the release
	helm uninstall $(K8S_RELEASE) --namespace $(K8S_NAMESPACE)

stop-kubernetes-server: ## delete the kind cluster
	kind delete cluster --name $(KIND_CLUSTER)
