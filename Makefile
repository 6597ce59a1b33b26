# The two quickstart commands. Each sets itself up on a fresh machine (venv + install).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint format forms docs clean

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,bench]'
	@touch $(STAMP)

## demo: build the forms, simulate a plan year, serve it as ODK Central, pull it, write outputs/
demo: $(STAMP)
	$(VENV)/bin/manyi demo

## test: lint, format check and the whole test suite
test: $(STAMP) lint
	$(VENV)/bin/pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

forms: $(STAMP)
	$(VENV)/bin/manyi forms build

## docs: refresh the README's screenshots (taken by the real-browser test)
docs: $(STAMP)
	MANYI_UPDATE_DOCS=1 $(VENV)/bin/pytest tests/test_flows.py -k "town_cycle or screenshots"

clean:
	rm -rf build outputs .pytest_cache .ruff_cache
