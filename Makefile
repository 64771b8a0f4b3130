# The two set-up commands of the README: `make serve` and `make test`.
PYTHON ?= python3
PORT ?= 3000

.PHONY: serve install model test system-deps build bench soak

serve: install model  ## install, train the default model if the store has none, serve on :$(PORT)
	$(PYTHON) -m bentoml serve service:FlatPriceService --port $(PORT)

install:
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -e ".[dev]"

model:
	$(PYTHON) -m train --if-missing

system-deps:  ## Debian packages the tests use: prometheus/promtool, chromium, docker-compose, wrk
	scripts/install-system-deps.sh

test: install system-deps  ## the whole test suite (real bentoml serve, Prometheus, locust)
	$(PYTHON) -m pytest

build: install model  ## a Bento (and, with a Docker engine, its image)
	$(PYTHON) -m bentoml build

bench: install model system-deps  ## service vs the original design vs BentoML's ceiling (~7 min)
	$(PYTHON) -m benchmarks.bench

soak: install model system-deps  ## 10 minutes at half capacity: memory, errors, p95 per minute
	$(PYTHON) -m benchmarks.soak
