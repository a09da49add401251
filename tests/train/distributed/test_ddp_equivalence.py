"""Two gloo ranks on half a batch each train exactly as one process on the whole batch.

One spawn of two ranks runs every scenario of ``ddp_workers`` (starting ranks costs seconds);
the same scenarios run once more in this process as the single-process reference.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
from ddp_workers import (
    HYPERPARAMETERS,
    LOADER_OPTIMIZERS,
    PER_RANK_DRAWS,
    SAF_STEPS,
    STEPS,
    free_port,
    rank_main,
    run_all,
)

WORLD = 2
Results = dict[str, dict[str, Any]]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[Results]:
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(rank_main, args=(WORLD, free_port(), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.fixture(scope="module")
def single() -> Results:
    return run_all(rank=0, world=1)


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-9, atol=1e-12, msg=name)


@pytest.mark.parametrize("optimizer", list(HYPERPARAMETERS))
def test_two_ranks_on_half_batches_match_one_process(
    ranks: list[Results], single: Results, optimizer: str
) -> None:
    reference = single[f"global/{optimizer}"]
    for rank, results in enumerate(ranks):
        got = results[f"global/{optimizer}"]
        assert got["status"] == "ok"
        assert got["steps"] == STEPS
        assert got["passes"] == reference["passes"]  # look steps happen on every rank alike
        assert_same_weights(got["weights"], reference["weights"])
        assert got["accuracy"] == reference["accuracy"]  # sharded evaluation, counts summed
        # the runner sums losses in float32
        assert got["train_loss"] == pytest.approx(reference["train_loss"], rel=1e-6)
        assert got["rank"] == rank


@pytest.mark.parametrize("optimizer", list(PER_RANK_DRAWS))
def test_per_rank_draws_keep_every_replica_identical_step_by_step(
    ranks: list[Results], optimizer: str
) -> None:
    """ESAM and K-SAM choose from each rank's 32 examples (γ = κ = ½: 16 each), RWP draws each
    rank's noise; the replica check compared the weights after every step and found no drift."""
    name = f"replicas/{optimizer}"
    first, second = ranks[0][name], ranks[1][name]
    assert first["status"] == second["status"] == "ok"
    assert first["steps"] == STEPS
    for key in first["weights"]:
        assert torch.equal(first["weights"][key], second["weights"][key]), key  # bitwise
    per_step = {"esam": 1 + 1 / 3 + 16 / 32, "ksam": 1 / 3 + 2 * 16 / 32, "rwp": 1.0}
    assert first["passes"] == pytest.approx(STEPS * per_step[optimizer], abs=1e-9)


def test_saf_on_two_ranks_keeps_one_bank_and_trains_as_one_process(
    ranks: list[Results], single: Results
) -> None:
    """Each rank sees other examples every epoch; every rank writes every rank's rows, so the
    epoch-1 steps read the same bank one process has, and the run is one process's."""
    reference = single["bank/saf"]
    assert reference["steps"] == SAF_STEPS
    for results in ranks:
        got = results["bank/saf"]
        assert got["status"] == "ok"
        assert_same_weights(got["weights"], reference["weights"])


@pytest.mark.parametrize("optimizer", ["sam", "looksam"])
def test_micro_batches_on_two_ranks_train_as_the_whole_batch_in_one_process(
    ranks: list[Results], single: Results, optimizer: str
) -> None:
    reference = single[f"global/{optimizer}"]  # one process, no micro-batches
    assert_same_weights(single[f"micro/{optimizer}"]["weights"], reference["weights"])
    for results in ranks:
        got = results[f"micro/{optimizer}"]
        assert got["passes"] == reference["passes"]
        assert_same_weights(got["weights"], reference["weights"])


def test_micro_batches_keep_the_per_rank_first_pass_local(ranks: list[Results]) -> None:
    for results in ranks:
        got, reference = results["per-rank-micro/looksam"], results["per-rank/looksam"]
        assert_same_weights(got["weights"], reference["weights"])


@pytest.mark.parametrize("optimizer", LOADER_OPTIMIZERS)
def test_a_dataloader_workload_reads_half_per_rank_and_trains_like_one_process(
    ranks: list[Results], single: Results, optimizer: str
) -> None:
    # Each rank reads (and adds noise to) only its half of every batch; the noise of an item
    # is seeded by its epoch and index, so the two halves are the very batch one process reads.
    reference = single[f"loader/{optimizer}"]
    assert reference["reads"] == STEPS * 64
    for results in ranks:
        got = results[f"loader/{optimizer}"]
        assert got["status"] == "ok"
        assert got["steps"] == STEPS
        assert got["reads"] == STEPS * 64 // WORLD
        assert_same_weights(got["weights"], reference["weights"])
        assert got["accuracy"] == reference["accuracy"]


def test_rank_zero_reports_the_global_run(ranks: list[Results]) -> None:
    main, other = ranks[0]["global/looksam"], ranks[1]["global/looksam"]
    assert main["is_main"]
    assert not other["is_main"]
    assert main["world_size"] == WORLD
    assert main["backend"] == "gloo"
    assert len(main["per_rank"]) == WORLD
    assert all(rate > 0 for rate in main["per_rank"])
    assert main["samples_per_second"] > 0


@pytest.mark.parametrize("optimizer", ["samk", "looksam", "layerlooksam"])
def test_gradient_as_bucket_view_gives_the_same_result(
    ranks: list[Results], single: Results, optimizer: str
) -> None:
    # LookSAM keeps g across the second backward, which DDP's bucket views would overwrite.
    name = f"bucket-view/{optimizer}"
    assert_same_weights(ranks[0][name]["weights"], single[name]["weights"])


@pytest.mark.parametrize("optimizer", ["sam", "samk", "looksam", "layerlooksam"])
def test_per_rank_perturbation_keeps_replicas_identical(
    ranks: list[Results], optimizer: str
) -> None:
    name = f"per-rank/{optimizer}"
    first, second = ranks[0][name]["weights"], ranks[1][name]["weights"]
    for key in first:
        assert torch.equal(first[key], second[key]), key  # bitwise


@pytest.mark.parametrize("optimizer", ["sam", "looksam", "layerlooksam"])
def test_per_rank_perturbation_is_not_the_global_one(ranks: list[Results], optimizer: str) -> None:
    per_rank = ranks[0][f"per-rank/{optimizer}"]["weights"]
    global_ = ranks[0][f"global/{optimizer}"]["weights"]
    gap = max((per_rank[k] - global_[k]).abs().max().item() for k in per_rank)
    assert gap > 1e-6  # each rank's own ε (and, for LookSAM, g_v) really changes the run


def test_replica_check_names_the_step_and_the_rank(ranks: list[Results]) -> None:
    for results in ranks:  # every rank sees the same gathered checksums and raises alike
        error = results["replica-check"]["error"]
        assert error is not None
        assert "after step 4" in error
        assert "rank(s) 1 differ from rank 0" in error
        assert "0.weight" in error
