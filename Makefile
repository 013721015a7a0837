# The two commands a server owner needs: `make run` and `make test`.
# Both build the virtual environment first, from nothing but Python 3.11 and
# the package registries.

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export ANONYMIZED_TELEMETRY := False

.PHONY: run test lint typecheck unit bench clean postgres-server

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip wheel
	# The CPU build of torch first, or sentence-transformers pulls the CUDA one.
	$(PY) -m pip install --quiet torch==2.13.0
	# dev: the test tools; bench: the peers the benchmarks measure (mypy checks bench/ too).
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(PY) -m app prepare-model
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m app run

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

unit: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not faults"

# The suite starts a throw-away PostgreSQL server of its own (tests/engines.py). Where none is
# installed, root with apt installs Debian's; elsewhere the Postgres variants are skipped and
# the run ends with a line saying so.
postgres-server:
	@if ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || command -v postgres >/dev/null 2>&1; then \
		:; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian's postgresql package for the tests"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends postgresql >/dev/null; } \
			|| echo "could not install postgresql: the Postgres tests will be skipped"; \
	else \
		echo "no PostgreSQL server (Debian: apt-get install postgresql): its tests will be skipped"; \
	fi

test: lint typecheck $(STAMP) postgres-server
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
