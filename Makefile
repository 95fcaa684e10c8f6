# The README's commands: `make run` (the main job, against the built-in fake provider,
# no API key needed), `make test` (what CI runs, via .ci/run) and `make bench` (the
# benchmark, which rewrites docs/performance.md).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench bench-limits

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

# The benchmark in a venv of its own, with what it compares llmadapters with
# (bench/requirements.txt: LiteLLM, httpx 0.28, matplotlib), none of them a dependency
# of the project. About 45 minutes on 2 cores; see bench/run.py.
BENCH := .venv-bench

$(BENCH)/bin/python:
	$(PYTHON) -m venv $(BENCH)
	$(BENCH)/bin/python -m pip install --quiet --upgrade pip

$(BENCH)/.installed: $(BENCH)/bin/python pyproject.toml plugins/llmadapters-aiohttp/pyproject.toml bench/requirements.txt
	$(BENCH)/bin/python -m pip install --quiet -e . -e plugins/llmadapters-aiohttp -r bench/requirements.txt
	touch $@

bench: $(BENCH)/.installed
	$(BENCH)/bin/python bench/run.py

# How well clients hold providers' hidden rate limits (bench/limits.py, about 8 minutes):
# rewrites docs/limits.md and docs/limits.json.
bench-limits: $(BENCH)/.installed
	$(BENCH)/bin/python bench/limits.py --oracle --page docs/limits.md --json docs/limits.json
