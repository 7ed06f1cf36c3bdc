# Two commands set everything up from a fresh clone: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.13 || command -v python3.12 || command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test soak bench venv clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "gsckit needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e . --group test
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/gsckit demo

test: $(STAMP)
	$(BIN)/python -m pytest

soak: $(STAMP)
	$(BIN)/python -m pytest -m soak

bench: $(STAMP)
	$(BIN)/python benchmarks/speedup.py
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/halt.py

clean:
	rm -rf $(VENV) .pytest_cache build dist *.egg-info
