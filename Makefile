# One entry point for people and CI alike. Every target sets up what it needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup test lint demo bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,demo]'
	touch $@

lint: setup
	$(PY) -m ruff check tocsin tests bench examples
	$(PY) -m ruff format --check tocsin tests bench examples

test: lint
	$(PY) -m pytest

demo: setup
	$(PY) examples/demo.py

bench: setup
	$(PY) bench/ingest.py

clean:
	rm -rf $(VENV) demo-run build *.egg-info .pytest_cache .ruff_cache .hypothesis
