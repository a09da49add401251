"""Part 2 of the GPU bench: host syncs per optimizer step, held to the registry allowance."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any, cast

from looksam.bench.gpu.plan import (
    SyncSetting,
    _check,
    _dash,
    _error_line,
    _k_hyperparameters,
    _release_memory,
    sam_family,
)
from looksam.bench.host_reads import StepReads, count_step_host_reads
from looksam.optim import (
    SharpnessAwareOptimizer,
    get_optimizer_info,
)
from looksam.train.runner import RunConfig, TrainingSession, resolve_device
from looksam.train.timing import synchronize


def _worst(steps: list[StepReads], looks: list[bool], look: bool, syncs: bool) -> int | None:
    values = [
        (s.syncs or 0) if syncs else s.host_reads
        for s, lk in zip(steps, looks, strict=True)
        if lk == look
    ]
    return max(values) if values else None


def check_host_syncs(setting: SyncSetting, device: str, enforce: bool) -> dict[str, Any]:
    """Part 2: a few plain and look steps of every SAM-family optimizer, their reads counted.

    k-step optimizers run with ``setting.k`` (2: look and plain steps alternate); those without
    a fixed schedule replay a second pass on every other step, so both kinds are seen (their
    rule is still evaluated every step). On CUDA the sync warnings are what is judged, elsewhere
    the host reads (reported, judged only when ``enforce``).
    """
    started = time.perf_counter()
    cuda = resolve_device(device).type == "cuda"
    measure = "host syncs" if cuda else "host reads"
    rows = []
    for name in sam_family():
        info = get_optimizer_info(name)
        allowance = info.host_read_allowance
        row: dict[str, Any] = {"optimizer": name, "label": info.label, "allowance": allowance}
        try:
            session = TrainingSession(
                RunConfig(
                    workload=setting.workload,
                    optimizer=name,
                    hyperparameters=_k_hyperparameters(name, setting.k),
                    batch_size=setting.batch_size,
                    device=device,
                    epochs=10_000,
                )
            )
            session.replay_second_passes(0.5, 2)
            # The path an accelerator takes, also in a CPU dry run (where "auto" reads floats).
            cast(SharpnessAwareOptimizer, session.optimizer).scalars = "device"
            batches = session.batches()
            for _ in range(setting.warmup_steps):
                session.train_step(*next(batches))
            looks = []
            with count_step_host_reads(session.optimizer, sync_debug=cuda) as counter:
                for _ in range(setting.steps):
                    before = session.passes
                    session.train_step(*next(batches))
                    looks.append(session.passes - before > 1)
            synchronize(session.device)
        except Exception as error:  # one optimizer's failure must not hide the others'
            row.update(error=_error_line(error), passed=False, per_step=[])
            rows.append(row)
            continue
        steps = counter.steps
        sites: Counter[str] = Counter()
        for s in steps:
            sites.update(s.sites)
        per_step = [
            {"look": lk, "host_reads": s.host_reads, "syncs": s.syncs}
            for s, lk in zip(steps, looks, strict=True)
        ]
        worst_plain = _worst(steps, looks, False, cuda)
        worst_look = _worst(steps, looks, True, cuda)
        worst = max(v for v in (worst_plain, worst_look, 0) if v is not None)
        row.update(
            error=None,
            plain_steps=looks.count(False),
            look_steps=looks.count(True),
            worst_plain=worst_plain,
            worst_look=worst_look,
            worst=worst,
            host_reads_per_step=sum(s.host_reads for s in steps) / max(1, len(steps)),
            sites=dict(sites.most_common()),
            per_step=per_step,
            passed=worst <= allowance,
        )
        rows.append(row)
        del session, batches
    _release_memory()
    return {
        "workload": setting.workload,
        "device": device,
        "measure": measure,
        "enforced": enforce,
        "warmup_steps": setting.warmup_steps,
        "steps": setting.steps,
        "k": setting.k,
        "rule": (
            "allowance per step: 1 for an optimizer whose registry entry has fixed_schedule "
            "False and a pass range with low != high (a rule that reads one value per step to "
            "decide on the second pass), 0 for every other"
        ),
        "elapsed_s": time.perf_counter() - started,
        "rows": rows,
    }


def _sync_checks(table: dict[str, Any]) -> list[dict[str, Any]]:
    checks = []
    measure = table["measure"]
    for row in table["rows"]:
        name = f"host-sync/{row['optimizer']}"
        if row.get("error"):
            checks.append(_check(name, False, row["error"]))
            continue
        sites = ", ".join(f"{site} ×{n}" for site, n in list(row["sites"].items())[:3])
        reason = (
            f"up to {row['worst']} {measure} per step (plain {_dash(row['worst_plain'])}, look "
            f"{_dash(row['worst_look'])}), allowed {row['allowance']}"
            + (f"; from {sites}" if row["worst"] else "")
        )
        if not table["enforced"]:
            reason += " (informational: this plan does not enforce the allowance)"
        checks.append(_check(name, row["passed"], reason, enforced=table["enforced"]))
    return checks
