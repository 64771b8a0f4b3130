# The two set-up commands of the README: `make serve` and `make test`.
# Everything runs in a project virtual environment (.venv), made with uv if present.
BASE_PYTHON ?= python3
VENV ?= .venv
PYTHON := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 3000
export PATH := $(abspath $(VENV))/bin:$(PATH)
export BENTOML_DO_NOT_TRACK ?= True

REPORT_VENV ?= .venv-report
.PHONY: retrain image images serve install install-dev install-batch install-loadtest install-compose compose-up compose-down model test test-fast system-deps build bench soak format mutation compose-env grafana-env ledger-env report-env

serve: install model  ## install, train the default model if the store has none, serve on $(HOST):$(PORT)
	$(PYTHON) -m bentoml serve service:FlatPriceService --host $(HOST) --port $(PORT)

$(PYTHON):
	$(BASE_PYTHON) -m venv $(VENV)

# Installs go through uv inside the venv (pinned, bootstrapped by the venv's pip in seconds): a first
# `make serve` takes about a minute instead of pip's 2-3. Its lines show the progress.
UV_VERSION = 0.13.9
UV := $(VENV)/bin/uv
$(UV): | $(PYTHON)
	@echo "[make] installing uv $(UV_VERSION) into $(VENV), the installer the next steps use"
	$(PYTHON) -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
define pip_install
	$(UV) pip install --python $(PYTHON) $(1)
endef

# Each extra is installed once and again only when the pins change (a stamp file in the venv).
$(VENV)/.installed-%: pyproject.toml requirements.txt | $(UV)
	@echo "[make] installing .[$*] into $(VENV) ($(INSTALL_TIME_$*) here the first time)"
	$(call pip_install,-e ".[$*]")
	@touch $@
INSTALL_TIME_train = about 1 minute
INSTALL_TIME_dev = about 2 minutes
INSTALL_TIME_batch = about 20 s
INSTALL_TIME_loadtest = about 10 s
INSTALL_TIME_compose = about 1 minute

install: $(VENV)/.installed-train  ## serving and training the default model: .[train]
install-dev: $(VENV)/.installed-dev  ## tests and tools: .[dev]
install-batch: $(VENV)/.installed-batch  ## batch pricing on Spark: .[batch] (python -m batch)
install-loadtest: $(VENV)/.installed-loadtest  ## the load test: .[loadtest] (.venv/bin/locust)
install-compose: $(VENV)/.installed-compose  ## podman-compose, for the compose stack without a Docker engine

retrain: install  ## a candidate from the real prices fed back (docs/models.md), promoted if the gate passes
	$(PYTHON) -m train --sales ledger --promote-if-better

model:
	@echo "[make] a model in the store? (else train the default one: about 25 s here)"
	$(PYTHON) -m train --if-missing

system-deps:  ## Debian packages the slow tests use (apt-get; says what before it installs)
	scripts/install-system-deps.sh

# The report's own environment: Evidently pulls packages that change how a server runs (uvloop), so not in .venv.
report-env: $(REPORT_VENV)/bin/python  ## python -m monitoring.report's environment (.venv-report)
$(REPORT_VENV)/bin/python: monitoring/report-requirements.txt | $(UV)
	@echo "[make] installing the report's environment into $(REPORT_VENV) (Evidently; about 30 s here)"
	$(UV) venv --allow-existing --python $(BASE_PYTHON) $(REPORT_VENV)
	$(UV) pip install --python $@ -r $<
	$(UV) pip install --quiet --python $@ --no-deps -e .
	@touch $@

test: install-dev system-deps report-env  ## the whole suite (real bentoml serve, Prometheus, locust, Chromium)
	$(PYTHON) -m pytest

test-fast: install-dev  ## the tests that need no server and no Debian package (under a minute)
	$(PYTHON) -m pytest -m "not slow"

build: install model  ## a Bento: the service and the model it serves
	$(PYTHON) -m bentoml build

IMAGE ?= flat_price:latest
IMAGE_BACKEND ?= docker
# The newest Bento, containerised. TMPDIR inside the repository: bentoml containerize refuses its own
# temporary copy of the Dockerfile template when that lies outside the working directory (bentoml#5566).
image: build  ## the Bento's container image ($(IMAGE), with Docker; IMAGE_BACKEND=podman works too)
	@mkdir -p build/containerize
	TMPDIR=$(CURDIR)/build/containerize $(PYTHON) -m bentoml containerize flat_price:latest --backend $(IMAGE_BACKEND) --image-tag $(IMAGE)

bench: install-dev model system-deps  ## service vs the original design vs BentoML's ceiling (~7 min)
	$(PYTHON) -m benchmarks.bench

soak: install-dev model system-deps  ## 10 minutes at half capacity: memory, errors, p95 per minute
	$(PYTHON) -m benchmarks.soak

images: install-dev model  ## with podman, no registry: stand-ins for the compose file's images and the Bento image (scripts/images.sh)
	scripts/images.sh

compose-env: grafana-env ledger-env  ## the compose stack's generated credentials (Grafana, the ledger's PostgreSQL), once

COMPOSE_PROJECT ?= monitoring
compose-up: install-compose compose-env  ## the compose stack with Docker or podman, ready (deploy/compose.py)
	$(PYTHON) -m deploy.compose up --project $(COMPOSE_PROJECT)

compose-down: install-compose  ## the compose stack's containers and network (the ledger's volume stays)
	$(PYTHON) -m deploy.compose down --project $(COMPOSE_PROJECT)

ledger-env: monitoring/ledger.env  ## the feedback ledger's credentials and /feedback's token for compose, generated once
monitoring/ledger.env:
	@password=$$($(BASE_PYTHON) -c 'import secrets; print(secrets.token_urlsafe(24))'); \
	token=$$($(BASE_PYTHON) -c 'import secrets; print(secrets.token_urlsafe(24))'); \
	sed "s/change-me-token/$$token/; s/change-me/$$password/g" monitoring/ledger.env.example > $@
	chmod 600 $@

grafana-env: monitoring/grafana.env  ## Grafana's admin credentials for the compose stack, generated once
monitoring/grafana.env:
	sed "s/^GF_SECURITY_ADMIN_PASSWORD=.*/GF_SECURITY_ADMIN_PASSWORD=$$($(BASE_PYTHON) -c 'import secrets; print(secrets.token_urlsafe(24))')/" monitoring/grafana.env.example > $@
	chmod 600 $@

format: install-dev
	$(PYTHON) -m ruff format . && $(PYTHON) -m ruff check --fix .

mutation: install-dev  ## mutation testing of the contract, the edge and the feedback ledger with the fast tests (~12 min)
	$(PYTHON) -m benchmarks.mutation
