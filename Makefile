# The README's two commands: `make demo` (set up everything, run the main job on the local
# stack, serve the Dagster UI) and `make test` (the whole suite). Everything they need is
# installed from here: a fresh machine needs only python3, node/npm and make.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
VENV_STAMP := $(VENV)/.installed
NODE_STAMP := pds/node_modules/.installed
CLI := $(VENV)/bin/moods-pipeline

.PHONY: setup demo test stack-up stack-down bench clean

CHROMIUM := /usr/bin/chromium

setup: $(VENV_STAMP) $(NODE_STAMP) $(CHROMIUM)

$(VENV_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

# better-sqlite3 compiles from source against the machine's Node headers.
$(NODE_STAMP): pds/package.json pds/package-lock.json
	cd pds && npm ci --nodedir=/usr --no-audit --no-fund --loglevel=error
	touch $@

# The browser tests (moods_pipeline_tests/ui/) drive Debian's Chromium through Playwright, whose
# own browser download cannot work here. Runs only when the browser is missing.
$(CHROMIUM):
	$(if $(filter 0,$(shell id -u)),,sudo) sh -c 'apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null'

demo: setup
	$(CLI) demo

test: setup
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi; exit $$rc

stack-up: setup
	$(CLI) stack up

stack-down: setup
	$(CLI) stack down

clean:
	-$(CLI) stack down
	rm -rf .moods $(VENV) pds/node_modules
