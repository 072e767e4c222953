# huaxiang: two commands for a new user.
#   make demo   set up, create a workspace, generate and load the demo data, serve on 127.0.0.1:8000
#   make test   install what the tests need and run the whole suite (lint, types, tests)

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOME_DIR ?= huaxiang-data
PERSONS ?= 10000
HOST ?= 127.0.0.1
PORT ?= 8000
STAMP := $(VENV)/.installed

.PHONY: install demo test lint typecheck pytest bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,spark]'
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/huaxiang --home $(HOME_DIR) init
	$(BIN)/huaxiang --home $(HOME_DIR) demo --persons $(PERSONS)
	$(BIN)/huaxiang --home $(HOME_DIR) serve --host $(HOST) --port $(PORT)

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: install
	$(BIN)/mypy

pytest: install
	$(BIN)/pytest

test: lint typecheck pytest

bench: install
	$(BIN)/python benchmarks/ingest.py --quick
	$(BIN)/python benchmarks/identity.py --quick
	$(BIN)/python benchmarks/import.py --quick
	$(BIN)/python benchmarks/audience.py --quick
	$(BIN)/python benchmarks/tags.py --quick
	$(BIN)/python benchmarks/realtime.py --quick
	$(BIN)/python benchmarks/realtime_regroup.py --quick
	$(BIN)/python benchmarks/analytics.py --quick

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
