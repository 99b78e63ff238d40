# logclass: every target installs what it needs into .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install run test lint model bench proto clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# CPU torch first, so no dependency can pull a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## make run: classify the bundled sample with the embedded defaults and print the table
run: $(STAMP)
	$(BIN)/logclass classify training/data/seed_test.csv

## make test: lint, type-check and run the whole suite (pytest's "no tests" exit 5 is a failure)
test: $(STAMP) lint
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check sidecar training tests benchmarks
	$(BIN)/ruff format --check sidecar training tests benchmarks
	$(BIN)/mypy

## make model: retrain models/default from the seed set
model: $(STAMP)
	$(BIN)/logclass train training/data/synthetic_logs.csv --out models/default --name default

## make proto: regenerate the Python gRPC stubs from proto/ (a test fails when they are stale)
proto: $(STAMP)
	$(BIN)/python -m sidecar.api.generate

## make bench: throughput against the seed algorithm, measured in the same run
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_pipeline.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
