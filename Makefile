# `make demo` and `make test` work on a fresh machine: they create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU-only machines this project is built on hold torch 2.14.1 locally; any torch>=2.4 works.
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1

.PHONY: demo test lint venv

$(BIN)/galaxytune: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_PIN) || $(BIN)/pip install -q "torch>=2.4" "torchvision>=0.19"
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(BIN)/galaxytune

demo: venv
	$(BIN)/galaxytune demo

test: venv
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check .
