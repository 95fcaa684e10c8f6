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
	rm -f out/prompts.out.jsonl && mkdir -p out
	$(BIN)/llmadapters batch examples/prompts.jsonl -o out/prompts.out.jsonl --config examples/llmadapters.toml

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir .site

# The core and the plugin packages pip-installed into a fresh venv, as a user would; the
# plugin end-to-end test runs in it.
E2E := .venv-e2e
SOURCES := pyproject.toml $(shell find llmadapters plugins -name '*.py' -o -name pyproject.toml -o -name README.md)

$(E2E)/.installed: $(SOURCES)
	rm -rf $(E2E)
	$(PYTHON) -m venv $(E2E)
	$(E2E)/bin/python -m pip install --quiet --upgrade pip
	$(E2E)/bin/python -m pip install --quiet . $(PLUGINS)
	touch $@

test: lint $(E2E)/.installed
	$(BIN)/python -m pytest
