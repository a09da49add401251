"""The single-process parts of data-parallel training: launch variables, slicing, validation,
old result files, and LookSAM's g_v hook."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from ddp_workers import free_port, loopback_env
from torch import Tensor, nn

from looksam.optim import LayerLookSAM, LookSAM
from looksam.train import runner
from looksam.train.distributed import (
    Launch,
    check_global_batch,
    fail_at_step,
    launch_from_env,
    rank_slice,
    threads_per_rank,
)
from looksam.train.runner import RunConfig, RunResult, run_training, validate_config
from looksam.train.workloads.synthetic import SyntheticMLP


def test_launch_is_read_from_torchruns_variables() -> None:
    assert launch_from_env({}) is None
    env = {"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}
    assert launch_from_env(env) == Launch(rank=3, local_rank=1, world_size=4)


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"WORLD_SIZE": "2"}, "RANK, LOCAL_RANK is not"),
        ({"WORLD_SIZE": "2", "RANK": "x", "LOCAL_RANK": "0"}, "must be integers"),
        ({"WORLD_SIZE": "2", "RANK": "2", "LOCAL_RANK": "0"}, "inconsistent"),
    ],
)
def test_a_broken_launch_is_a_clear_error(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        launch_from_env(env)


def test_global_batch_must_divide_by_the_world() -> None:
    assert check_global_batch(64, 4) == 16
    with pytest.raises(ValueError, match=r"batch size 63 .* does not divide by the 2 .* 62 or 64"):
        check_global_batch(63, 2)


def test_rank_slices_cover_everything_once() -> None:
    for n in (0, 1, 7, 10):
        parts = [rank_slice(n, r, 3) for r in range(3)]
        assert [i for p in parts for i in range(n)[p]] == list(range(n))


def test_fail_hook_and_threads() -> None:
    assert fail_at_step(1, {"LOOKSAM_FAIL_AT": "1:3"}) == 3
    assert fail_at_step(0, {"LOOKSAM_FAIL_AT": "1:3"}) is None
    assert fail_at_step(0, {}) is None
    with pytest.raises(ValueError, match="RANK:STEP"):
        fail_at_step(0, {"LOOKSAM_FAIL_AT": "soon"})
    assert threads_per_rank(2, cpus=2) == 1
    assert threads_per_rank(4, cpus=2) == 1
    assert threads_per_rank(2, cpus=16) == 8


@pytest.mark.parametrize(
    ("overrides", "world", "needle"),
    [
        ({"perturbation": "local"}, 1, "choose one of: global, per-rank"),
        ({"perturbation": "per-rank", "amp": "fp16"}, 1, "cannot be combined with --amp fp16"),
        ({"replica_check_every": -1}, 1, "replica check interval"),
        ({"batch_size": 65}, 2, "does not divide by the 2 processes"),
        ({}, 3, "batch size 64 .* 3 processes"),  # the workload's default batch is checked too
    ],
)
def test_parallel_settings_are_validated(overrides: dict, world: int, needle: str) -> None:
    config = RunConfig("digits-noisy", "looksam", device="cpu", **overrides)
    with pytest.raises(ValueError, match=needle):
        validate_config(config, world)


def test_results_written_before_data_parallel_runs_still_read(tmp_path: Path) -> None:
    result = run_training(RunConfig("digits-noisy", "sgd", max_steps=3, device="cpu"))
    assert (result.world_size, result.rank, result.per_rank_samples_per_second) == (1, 0, ())
    assert result.is_main
    assert result.environment.backend is None
    old = result.to_dict()
    for key in ("world_size", "per_rank_samples_per_second", "rank"):
        del old[key]
    for key in ("perturbation", "replica_check_every"):
        del old["config"][key]
    del old["environment"]["backend"]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    assert RunResult.from_dict(json.loads(path.read_text())) == result
    result.write_json(path)  # and the new fields round-trip
    assert RunResult.from_dict(json.loads(path.read_text())) == result
    assert [p.name for p in tmp_path.iterdir()] == ["old.json"]  # no partial file left


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2)).double()


def _train(opt_factory: type[LookSAM], sync: object, steps: int = 7) -> list[Tensor]:
    model = _model()
    opt = opt_factory(
        torch.optim.SGD(model.parameters(), lr=0.1), rho=0.1, k=3, alpha=0.7, sync_gv=sync
    )
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(8, 4, generator=gen, dtype=torch.float64)
        y = torch.randn(8, 2, generator=gen, dtype=torch.float64)

        def closure(x: Tensor = x, y: Tensor = y) -> Tensor:
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(x), y)
            loss.backward()
            return loss

        opt.step(closure)
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("cls", [LookSAM, LayerLookSAM])
def test_gv_hook_runs_once_per_look_step_and_an_identity_changes_nothing(
    cls: type[LookSAM],
) -> None:
    calls: list[int] = []

    def identity(tensors: list[Tensor]) -> None:  # one rank: the average is itself
        calls.append(len(tensors))

    with_hook = _train(cls, identity)
    without = _train(cls, None)
    assert calls == [1, 1, 1]  # look steps 0, 3, 6; one bucket: its flat g_v, one all-reduce
    for a, b in zip(with_hook, without, strict=True):
        assert torch.equal(a, b)


def _one_look_step(sync: object) -> tuple[LookSAM, list[Tensor]]:
    model = _model()
    opt = LookSAM(torch.optim.SGD(model.parameters(), lr=0.1), rho=0.1, k=2, sync_gv=sync)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(8, 4, generator=gen, dtype=torch.float64)
    y = torch.randn(8, 2, generator=gen, dtype=torch.float64)

    def closure() -> Tensor:
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    opt.step(closure)
    return opt, [opt.state[p]["g_v"] for p in model.parameters()]


def test_the_synchronised_gv_and_its_norm_are_what_gets_reused() -> None:
    def halve(tensors: list[Tensor]) -> None:  # as if the other rank's g_v were 0
        torch._foreach_mul_(tensors, 0.5)

    local, local_gv = _one_look_step(None)
    synced, synced_gv = _one_look_step(halve)
    for a, b in zip(synced_gv, local_gv, strict=True):
        torch.testing.assert_close(a, 0.5 * b, rtol=1e-15, atol=0.0)
    assert synced.gv_norm == pytest.approx(0.5 * local.gv_norm, rel=1e-12)  # recomputed


def test_gv_hook_is_called_even_when_this_ranks_gradient_overflowed() -> None:
    # Per-rank mode: a local overflow must not skip the collective the other ranks are in.
    calls: list[bool] = []

    def record(tensors: list[Tensor]) -> None:
        calls.append(not all(bool(t.isfinite().all()) for t in tensors))

    param = nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = LookSAM(torch.optim.SGD([param], lr=0.1), rho=0.1, k=2, sync_gv=record)
    param.grad = torch.tensor([1.0, math.inf, 0.0], dtype=torch.float64)
    opt.first_step()
    param.grad = torch.tensor([0.5, 0.5, 0.5], dtype=torch.float64)
    opt.second_step()
    # Not finite: the average is not finite on any rank, so every rank keeps its previous g_v
    # (none yet: zeros, and nothing reused) together.
    assert calls == [True]
    assert opt.gv_norm == 0.0
    assert torch.equal(opt.state[param]["g_v"], torch.zeros(3, dtype=torch.float64))


def test_sync_gv_must_be_callable() -> None:
    with pytest.raises(ValueError, match="sync_gv must be None or a callable"):
        LookSAM(torch.optim.SGD(_model().parameters(), lr=0.1), sync_gv=3)  # type: ignore[arg-type]


class _PassClock:
    """The runner's clock in a spawned rank: one fake second per training pass, nothing else."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class _ClockedMLP(SyntheticMLP):
    """Random data (no data set to load in each rank); each training pass costs 1 fake second."""

    def __init__(self, clock: _PassClock) -> None:
        super().__init__()
        self.clock = clock

    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        if torch.is_grad_enabled():
            self.clock.t += 1.0
        return super().loss(logits, targets)


THROUGHPUT_STEPS, THROUGHPUT_WARMUP, GLOBAL_BATCH = 6, 2, 64


def _throughput_rank(rank: int, world: int, port: int, out_dir: str) -> None:
    """One spawned gloo rank: a short SGD run on the fake clock, its result written as JSON."""
    os.environ.update(loopback_env())
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        clock = _PassClock()
        runner.now = clock  # a process of its own: nothing to restore
        config = RunConfig(
            "synthetic-mlp",
            "sgd",
            batch_size=GLOBAL_BATCH,
            max_steps=THROUGHPUT_STEPS,
            device="cpu",
            timing_warmup_steps=THROUGHPUT_WARMUP,
        )
        run_training(config, workload=_ClockedMLP(clock)).write_json(
            Path(out_dir) / f"rank{rank}.json"
        )
    finally:
        dist.destroy_process_group()


def test_each_rank_reports_the_samples_of_its_own_share_of_the_batch(tmp_path: Path) -> None:
    """Two gloo ranks on a clock that moves one second per pass: 4 timed SGD steps take 4 s on
    every rank, so each rank trains 4 × 32 / 4 = 32 samples/s and the run 4 × 64 / 4 = 64."""
    world = 2
    mp.spawn(_throughput_rank, args=(world, free_port(), str(tmp_path)), nprocs=world)
    results = [
        RunResult.from_dict(json.loads((tmp_path / f"rank{r}.json").read_text()))
        for r in range(world)
    ]
    timed_steps = THROUGHPUT_STEPS - THROUGHPUT_WARMUP
    local_batch = GLOBAL_BATCH // world
    for rank, result in enumerate(results):
        assert (result.status, result.rank, result.world_size) == ("ok", rank, world)
        timed_seconds = result.train_seconds - result.warmup_seconds
        assert timed_seconds == timed_steps  # SGD: one pass, one fake second, per step
        assert result.samples_per_second == timed_steps * GLOBAL_BATCH / timed_seconds
        share = timed_steps * local_batch / timed_seconds  # this rank's slice, same timings
        assert result.per_rank_samples_per_second == (share,) * world
        assert sum(result.per_rank_samples_per_second) == result.samples_per_second
