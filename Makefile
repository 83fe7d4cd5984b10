# One command each, on a fresh clone: a local virtualenv is created or reused as needed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)  ## server + embedded Redis + demo workspace; console at http://127.0.0.1:8000/
	$(BIN)/switchboard demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff format --check router adapters bench tests
	$(BIN)/ruff check router adapters bench tests
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench all

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
