"""One-shot GPU benchmark: step costs in bf16, host syncs per optimizer step, compiled vs eager.

``bench/gpu.sh`` (``python -m looksam.bench.gpu [--out DIR] [--dry-run] [--time-budget S]``) is
the single command someone with one CUDA GPU runs to fill docs/results.md; it fits in
``--time-budget`` seconds (8 minutes by default) and does three things:

1. **Step costs in bf16.** :func:`~looksam.bench.suite.measure_suite` on every workload of
   :data:`GPU_PLAN` (ViT-S/16 and ResNet-50 on ImageNet-sized random tensors) for the base and
   every registered SAM-family optimizer: paired step-cost ratios with their IQR, samples/s,
   floor (passes per step, counted) and overhead. The rounds are picked per workload from a
   short calibration of the base's step time, so each workload fits its share of the budget.
2. **Host syncs.** A few plain and look steps of every SAM-family optimizer on a small model,
   counting what the optimizer's ``step`` does outside its closure (the model's forward and
   backward are not counted): on CUDA the warnings of ``torch.cuda.set_sync_debug_mode("warn")``
   and, on any device, the host reads (``Tensor.item``, ``tolist``, ``float()``, ``int()``,
   ``bool()``). Each optimizer is held to its registry entry's ``host_read_allowance``: no sync
   at all, except for an adaptive rule that must read one value per step to decide. An optimizer
   above its allowance fails the run, on CUDA and in the CPU dry run alike: a CPU has no sync to
   pay for, but the host reads it counts are the very calls that would sync on a GPU.
3. **Compiled against eager.** For the base (SGD) and LookSAM, the same session built twice,
   with ``RunConfig.compile`` on and off: the compiled/eager step-time ratio over paired rounds,
   and whether the losses after N steps agree within a float tolerance. A compile error fails.

It writes ``results.json`` (machine, every table, every check with its reason) and
``results.md`` (tables ready to paste into docs/results.md, the card's name in the heading) into
the output folder, prints the Markdown, and exits 1 when an enforced check failed (2 for bad
input, before anything runs).

``--dry-run`` (automatic without a CUDA device) runs the same code on ``synthetic-mlp`` on the
CPU with tiny settings (:data:`DRY_RUN_PLAN`), in well under a minute, so CI keeps the script
working; its numbers are not GPU numbers.

Everything here is a library too: a notebook can call :func:`run_gpu_bench` and
:func:`to_markdown`, or the parts on their own.
"""

from __future__ import annotations

from looksam.bench.gpu.cli import main
from looksam.bench.gpu.markdown import to_markdown, write_results
from looksam.bench.gpu.plan import (
    COMPILED_OPTIMIZERS,
    DRY_RUN_PLAN,
    GPU_PLAN,
    CompileSetting,
    Plan,
    StepCostSetting,
    SyncSetting,
)
from looksam.bench.gpu.run import machine, run_gpu_bench
from looksam.bench.gpu.step_costs import plan_rounds
from looksam.bench.host_reads import HOST_READ_METHODS, HostReadCounter, count_step_host_reads

__all__ = [
    "COMPILED_OPTIMIZERS",
    "DRY_RUN_PLAN",
    "GPU_PLAN",
    "HOST_READ_METHODS",
    "CompileSetting",
    "HostReadCounter",
    "Plan",
    "StepCostSetting",
    "SyncSetting",
    "count_step_host_reads",
    "machine",
    "main",
    "plan_rounds",
    "run_gpu_bench",
    "to_markdown",
    "write_results",
]
