# The README's two commands: `make run` (the main job, against the built-in fake
# provider, no API key needed) and `make test` (what CI runs, via .ci/run).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	touch $@

PLUGINS := $(wildcard plugins/llmadapters-*)

$(VENV)/.installed-test: $(VENV)/.installed $(wildcard plugins/*/pyproject.toml)
	$(BIN)/python -m pip install --quiet -e '.[test]' $(addprefix -e ,$(PLUGINS))
	touch $@

run: $(VENV)/.installed
	$(BIN)/llmadapters chat "Hello from llmadapters: this reply streams from the built-in fake provider." --usage

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest
