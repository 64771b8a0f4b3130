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
.PHONY: serve install install-dev model test test-fast system-deps build bench soak format mutation grafana-env report-env

serve: install model  ## install, train the default model if the store has none, serve on $(HOST):$(PORT)
	$(PYTHON) -m bentoml serve service:FlatPriceService --host $(HOST) --port $(PORT)

$(PYTHON):
	@if command -v uv >/dev/null 2>&1; then uv venv --quiet --python $(BASE_PYTHON) $(VENV); \
	else $(BASE_PYTHON) -m venv $(VENV); fi

# pip inside the venv (uv's venv has none; `uv pip` is used when uv is on the PATH).
define pip_install
	@if command -v uv >/dev/null 2>&1; then uv pip install --quiet --python $(PYTHON) $(1); \
	else $(PYTHON) -m pip install --quiet --disable-pip-version-check $(1); fi
endef

install: $(PYTHON)  ## serving and training the default model: .[train]
	$(call pip_install,-e ".[train]")

install-dev: $(PYTHON)  ## tests and tools: .[dev]
	$(call pip_install,-e ".[dev]")

model:
	$(PYTHON) -m train --if-missing

system-deps:  ## Debian packages the slow tests use (apt-get; says what before it installs)
	scripts/install-system-deps.sh

# The report's own environment: Evidently pulls packages that change how a server runs (uvloop), so not in .venv.
report-env: $(REPORT_VENV)/bin/python  ## python -m monitoring.report's environment (.venv-report)
$(REPORT_VENV)/bin/python: monitoring/report-requirements.txt
	@if command -v uv >/dev/null 2>&1; then uv venv --quiet --allow-existing --python $(BASE_PYTHON) $(REPORT_VENV) && \
	uv pip install --quiet --python $@ -r $< && uv pip install --quiet --python $@ --no-deps -e .; \
	else $(BASE_PYTHON) -m venv $(REPORT_VENV) && $@ -m pip install --quiet -r $< && $@ -m pip install --quiet --no-deps -e .; fi
	@touch $@

test: install-dev system-deps report-env  ## the whole suite (real bentoml serve, Prometheus, locust, Chromium)
	$(PYTHON) -m pytest

test-fast: install-dev  ## the tests that need no server and no Debian package (under a minute)
	$(PYTHON) -m pytest -m "not slow"

build: install model  ## a Bento (and, with a Docker engine, its image)
	$(PYTHON) -m bentoml build

bench: install-dev model system-deps  ## service vs the original design vs BentoML's ceiling (~7 min)
	$(PYTHON) -m benchmarks.bench

soak: install-dev model system-deps  ## 10 minutes at half capacity: memory, errors, p95 per minute
	$(PYTHON) -m benchmarks.soak

grafana-env: monitoring/grafana.env  ## Grafana's admin credentials for the compose stack, generated once
monitoring/grafana.env:
	sed "s/^GF_SECURITY_ADMIN_PASSWORD=.*/GF_SECURITY_ADMIN_PASSWORD=$$($(BASE_PYTHON) -c 'import secrets; print(secrets.token_urlsafe(24))')/" monitoring/grafana.env.example > $@
	chmod 600 $@

format: install-dev
	$(PYTHON) -m ruff format . && $(PYTHON) -m ruff check --fix .

mutation: install-dev  ## mutation testing of the contract and the edge with the fast tests (~10 min)
	$(PYTHON) -m benchmarks.mutation
