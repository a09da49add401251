#!/usr/bin/env bash
# One-shot GPU benchmark (step costs in bf16, host syncs per optimizer step, torch.compile against
# eager) in about 8 minutes on one CUDA GPU; a CPU dry run without one. See looksam/bench/gpu/.
#   bench/gpu.sh [--out DIR] [--dry-run] [--time-budget SECONDS]
# PYTHON picks the interpreter (default: the project's .venv).
exec "${PYTHON:-.venv/bin/python}" -m looksam.bench.gpu "$@"
