PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean docs browser

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/sgdlab demo --out results/demo

# One pytest process per test module (a single long-lived process holding the compiled programs
# of the whole suite made XLA's CPU compiler segfault), as many modules at a time as there are
# cores (compilation, most of the suite's time, is single-threaded): tests/run_suite.py.
# SGDLAB_TEST_JOBS=1 runs them one after the other.
test: $(STAMP) browser
	$(BIN)/python tests/run_suite.py

# The documentation site (mkdocs-material) into site/; STRICT=1 (CI) makes warnings, broken
# links included, errors.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build $(if $(STRICT),--strict) -q

# Debian's chromium for tests/test_docs.py (a headless browser driven by playwright's Python
# package; nothing downloads a browser of its own). Idempotent; needs root or sudo.
browser:
	@command -v chromium >/dev/null 2>&1 || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; }

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/engines.py --update-md

clean:
	rm -rf $(VENV) results site
