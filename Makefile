# looksam-bench: every target sets up .venv on first use, so a fresh clone needs no other step.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install sweep test test-min lint format bench-optim bench-gpu clean

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

# The oldest torch, torchvision and timm that pyproject.toml admits (constraints-min.txt), in their
# own venv: the optimizer, training-loop and CLI tests. Not part of `make test` or CI: the first
# run downloads a CUDA build of torch 2.11 from PyPI (a few GB, once); later runs reuse it.
MIN_VENV   ?= .venv-min
MIN_STAMP  := $(MIN_VENV)/.installed
MIN_TESTS  ?= tests/optim tests/train tests/cli tests/test_packaging.py tests/test_layout.py

$(MIN_STAMP): pyproject.toml constraints.txt constraints-min.txt
	@test -x $(MIN_VENV)/bin/python || $(PYTHON) -m venv $(MIN_VENV)
	grep -v -E '^(torch|torchvision|timm|triton)==|^(nvidia|cuda)-' constraints.txt \
		| cat - constraints-min.txt > $(MIN_VENV)/constraints.txt
	$(MIN_VENV)/bin/python -m pip install --quiet -c $(MIN_VENV)/constraints.txt -e '.[test,mnist]'
	@touch $(MIN_STAMP)

test-min: $(MIN_STAMP)
	$(MIN_VENV)/bin/python -c "import torch, torchvision, timm; \
		print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'timm', timm.__version__)"
	$(MIN_VENV)/bin/python -m pytest -q $(MIN_TESTS)

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
	rm -rf $(VENV) $(MIN_VENV) .pytest_cache .mypy_cache .ruff_cache
