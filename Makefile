PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

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
test: $(STAMP)
	$(BIN)/python tests/run_suite.py

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/engines.py --update-md

clean:
	rm -rf $(VENV) results
