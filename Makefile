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

# One process per test module: in a single long-lived process holding the compiled programs
# of the whole suite, XLA's CPU compiler segfaulted (twice, at the same test); each module
# passes on its own.
test: $(STAMP)
	@set -e; for f in tests/test_*.py; do echo "== $$f"; $(BIN)/python -m pytest -q --durations=3 $$f; done

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/engines.py --update-md

clean:
	rm -rf $(VENV) results
