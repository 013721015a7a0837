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

.PHONY: run test lint typecheck unit bench clean

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

test: lint typecheck $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
