# The two quickstart commands. Each sets itself up on a fresh machine (venv + install).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint format forms clean

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

## demo: build every form (pyxform + ODK Validate) into build/forms/
demo: $(STAMP)
	$(VENV)/bin/manyi forms build

## test: lint, format check and the whole test suite
test: $(STAMP) lint
	$(VENV)/bin/pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

forms: demo

clean:
	rm -rf build outputs .pytest_cache .ruff_cache
