"""``python -m looksam.bench.gpu``: the GPU bench's command line (argparse, exit codes)."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import NoReturn

import torch

from looksam.bench.gpu.markdown import to_markdown, write_results
from looksam.bench.gpu.plan import DEFAULT_OUT, DEFAULT_TIME_BUDGET_S, _stderr
from looksam.bench.gpu.run import run_gpu_bench


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def _out_problem(out: Path, source: str = "--out") -> str | None:
    """Why results could not be written to ``out`` (None: fine); creates the folder."""
    if out.exists() and not out.is_dir():
        return f"{source} {out} is not a directory"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return f"{source} {out}: cannot create it ({error.strerror or error})"
    if not os.access(out, os.W_OK | os.X_OK):
        return f"{source} {out}: cannot write there"
    return None


def main(argv: list[str] | None = None) -> int:
    """``bench/gpu.sh``: parse, check the output folder, run, write, print; the exit code."""
    parser = _Parser(
        prog="bench/gpu.sh",
        description="One-shot GPU benchmark: step costs in bf16, host syncs per optimizer step, "
        "torch.compile against eager. Writes results.json and results.md.",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"output folder (default: $OUT when set, else {DEFAULT_OUT})",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="tiny CPU run of every part (automatic without a CUDA device)",
    )
    parser.add_argument(
        "--time-budget",
        type=float,
        default=DEFAULT_TIME_BUDGET_S,
        metavar="SECONDS",
        help=f"wall-clock the run aims for (default {DEFAULT_TIME_BUDGET_S:.0f})",
    )
    args = parser.parse_args(argv)
    if not (math.isfinite(args.time_budget) and args.time_budget > 0):
        parser.error(f"--time-budget must be a number of seconds > 0, got {args.time_budget:g}")
    if args.out is not None:
        out, source = args.out, "--out"
    elif os.environ.get("OUT"):
        out, source = Path(os.environ["OUT"]), "$OUT"
    else:
        out, source = DEFAULT_OUT, "the output folder"
    problem = _out_problem(out, source)
    if problem is not None:
        parser.error(problem)
    dry_run = args.dry_run
    if not dry_run and not torch.cuda.is_available():
        _stderr("no CUDA device: running the CPU dry run (--dry-run); its numbers are not GPU's")
        dry_run = True
    results = run_gpu_bench(dry_run=dry_run, time_budget=args.time_budget)
    json_path, md_path = write_results(results, out)
    print(to_markdown(results), end="")
    failed = [c["name"] for c in results["checks"] if c["enforced"] and not c["passed"]]
    _stderr(f"wrote {json_path} and {md_path}")
    if failed:
        _stderr(f"failed: {', '.join(failed)}")
        return 1
    return 0
