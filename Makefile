# looksam-bench: every target sets up .venv on first use, so a fresh clone needs no other step.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install sweep test lint format bench-optim bench-gpu clean

install: $(STAMP)

# Re-installs only when the project's requirements or pins change.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,mnist,postgres]'
	@touch $(STAMP)

# The README's first command: set up, then the default sweep (sweeps/quick.toml, CPU if no GPU).
sweep: install
	$(BIN)/looksam-bench sweep sweeps/quick.toml

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check looksam tests
	$(BIN)/ruff format --check looksam tests
	$(BIN)/mypy

format: install
	$(BIN)/ruff format looksam tests
	$(BIN)/ruff check --fix looksam tests

# Benchmarks, not tests: step cost of each optimizer relative to its base, on the CPU models.
bench-optim: install
	$(BIN)/looksam-bench bench -w synthetic-mlp --device cpu --rounds 30
	$(BIN)/looksam-bench bench -w synthetic-convnet --device cpu --rounds 30

# One GPU, one command, about 8 minutes: bf16 step costs, host syncs, compiled vs eager; writes
# reports/gpu-bench/results.{json,md} ($OUT when set). Without CUDA: a CPU dry run (seconds).
bench-gpu: install
	PYTHON=$(BIN)/python bench/gpu.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
