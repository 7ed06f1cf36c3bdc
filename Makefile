# Two commands set everything up from a fresh clone: `make demo` and `make test`.
# the first interpreter that runs and is 3.11+ (version-manager shims may exist but not run)
PYTHON ?= $(shell for p in python3 python3.13 python3.12 python3.11; do $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LAB_STAMP := $(VENV)/.lab-installed
FIG_STAMP := $(VENV)/.figures-installed
LAB_ARGS ?=
NOTEBOOK ?= notebooks/quickstart.ipynb

.PHONY: demo test notebook soak bench figures venv clean

$(BIN)/python:
	@test -n "$(PYTHON)" || { echo "gsckit needs Python 3.11+ (set PYTHON=...)"; exit 1; }
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

# JupyterLab only here, not in `make test`: the notebook extra (the QPM gauge) and the lab group
$(LAB_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[notebook]' --group lab
	touch $(LAB_STAMP)

# Jupyter refuses to run as root unless told to (containers often run as root)
notebook: $(LAB_STAMP)
	$(BIN)/jupyter lab $(NOTEBOOK) $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

# the README's Explore figures (docs/figures/*.png), drawn from the simulator; Pillow shrinks them
$(FIG_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --group figures
	touch $(FIG_STAMP)

figures: $(FIG_STAMP)
	$(BIN)/python scripts/figures.py

soak: $(STAMP)
	$(BIN)/python -m pytest -m soak --timeout=0

bench: $(STAMP)
	$(BIN)/python benchmarks/speedup.py
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/halt.py
	$(BIN)/python benchmarks/sync_cost.py
	$(BIN)/python benchmarks/completeness.py

clean:
	rm -rf $(VENV) .pytest_cache build dist *.egg-info
