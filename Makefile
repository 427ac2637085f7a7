# Set-up and everyday commands. `make demo` runs the platform, `make test` runs the tests; both set up what they need.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= $(if $(wildcard ../shared/data/beir),../shared/data/beir,)
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install test lint typecheck demo bench-quality services clean

$(BIN)/rr: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: the CPU build; anything else would pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(BIN)/rr

install: $(BIN)/rr

services:
	bash scripts/services.sh

test: install services
	$(BIN)/ruff check .
	$(BIN)/mypy .
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy .

demo: install
	$(BIN)/rr serve $(if $(DATA),--data $(DATA),)

bench-quality: install
	$(BIN)/rr bench quality --data $(or $(DATA),../shared/data/beir)

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache
