# logclass: every target installs what it needs into .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install run test lint model bench bench-server proto clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# CPU torch first, so no dependency can pull a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## make run: start the sidecar on the embedded defaults (127.0.0.1:50051); Ctrl-C drains and stops it
run: $(STAMP)
	$(BIN)/logclass serve

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

## make bench-server: the gRPC sidecar against the in-process pipeline, in the same run
bench-server: $(STAMP)
	$(BIN)/python benchmarks/bench_server.py

## make proto: regenerate the Python gRPC stubs from proto/ (a test fails when they are stale)
proto: $(STAMP)
	$(BIN)/python -m sidecar.api.generate

## make bench: throughput against the seed algorithm, measured in the same run
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_pipeline.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
