"""The training-method contract from the loop's side: subsets run as batches of their own and are
costed as their share of a pass, sample ids and loss terms reach the method, the method's memory
is reported, a plugin can use every capability, and a workload that cannot give what a method
needs is refused before training."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.utils.data import TensorDataset

from looksam.optim import (
    FORWARD_ONLY_PASS,
    LossTermMethod,
    OptimizerInfo,
    _registry,
    register_optimizer,
)
from looksam.optim._registry import fixed_passes, get_optimizer_info
from looksam.train.runner import RunConfig, TrainingSession, run_training, validate_config
from looksam.train.workloads import create_workload, custom_workload

BATCH = 60


def _session(optimizer: str, **config: Any) -> TrainingSession:
    hp = config.pop("hyperparameters", {})
    return TrainingSession(
        RunConfig(
            workload="digits-noisy",
            optimizer=optimizer,
            batch_size=BATCH,
            seed=0,
            device="cpu",
            hyperparameters=hp,
            **config,
        )
    )


def _forward_sizes(session: TrainingSession) -> list[int]:
    """The batch size of every forward pass the model runs from now on."""
    sizes: list[int] = []
    session.model.register_forward_pre_hook(lambda _m, args: sizes.append(len(args[0])))
    return sizes


@pytest.mark.parametrize(
    ("optimizer", "micro_batches", "expected"),
    [
        # g on the batch, a forward-only pass at w + ε on the batch, g_s on γ = ½ of it
        ("esam", 1, [60, 60, 30]),
        # a forward-only ranking pass on the batch, then g and g_s on κ = ½ of it
        ("ksam", 1, [60, 30, 30]),
        # micro-batches split every pass, the subset's too (30 = 8 + 8 + 7 + 7)
        ("esam", 4, [15] * 8 + [8, 8, 7, 7]),
        ("ksam", 4, [15] * 4 + [8, 8, 7, 7] * 2),
    ],
)
def test_a_subset_pass_runs_as_a_batch_of_its_own(
    optimizer: str, micro_batches: int, expected: list[int]
) -> None:
    session = _session(optimizer, micro_batches=micro_batches)
    batch = next(session.batches())
    sizes = _forward_sizes(session)
    session.train_step(*batch)
    assert sizes == expected


@pytest.mark.parametrize(
    ("optimizer", "hyperparameters", "passes"),
    [
        ("esam", {"gamma": 0.5}, 1 + FORWARD_ONLY_PASS + 0.5),
        ("esam", {"gamma": 0.25}, 1 + FORWARD_ONLY_PASS + 15 / 60),
        ("ksam", {"fraction": 0.2}, FORWARD_ONLY_PASS + 2 * 12 / 60),
        # ⌊0.01·60 + ½⌋ = 1: the boundary where a subset is a single example
        ("ksam", {"fraction": 0.01}, FORWARD_ONLY_PASS + 2 * 1 / 60),
    ],
)
def test_passes_count_the_share_of_the_batch_each_pass_ran(
    optimizer: str, hyperparameters: dict[str, float], passes: float
) -> None:
    session = _session(optimizer, hyperparameters=hyperparameters)
    batch = next(session.batches())
    session.train_step(*batch)
    assert session.passes == pytest.approx(passes, abs=1e-12)
    # the registry's cost is the same count for a batch that γ and κ divide exactly
    if optimizer == "esam" or hyperparameters["fraction"] == 0.2:
        expected = get_optimizer_info(optimizer).passes_per_step(hyperparameters)
        assert session.passes == pytest.approx(expected, abs=1e-12)


def test_the_method_memory_is_reported_in_the_result() -> None:
    digits_classes = 10
    saf = run_training(
        RunConfig(
            workload="digits-noisy",
            optimizer="saf",
            batch_size=BATCH,
            max_steps=3,
            device="cpu",
            hyperparameters={"lag": 2},
        )
    )
    per_example = (2 + 1) * digits_classes * 4 + (2 + 1) * 8  # fp32 logits + int64 epoch stamps
    assert saf.method_bytes_per_example == per_example
    examples = create_workload("digits-noisy").num_train_examples  # the whole set, not a batch
    assert saf.method_memory["output bank"] == examples * per_example

    session = _session("mesa")
    model_bytes = sum(t.numel() * t.element_size() for t in session.model.state_dict().values())
    assert session.loss_term is not None
    assert session.loss_term.memory_bytes() == {"EMA model": model_bytes}


# --- a plugin can use every capability --------------------------------------------------------
class TrimmedStep(Optimizer):
    """A plugin's per-example method: the base step on the gradient of the lower-loss half of
    the batch (loss trimming), chosen from a forward-only pass."""

    calls: list[tuple[int | None, bool]]

    def __init__(self, base: Optimizer) -> None:
        super().__init__(base.param_groups, defaults={})
        self.base, self.param_groups, self.calls = base, base.param_groups, []

    def step(self, closure: Any = None) -> Tensor:  # type: ignore[override]
        losses = closure(None, backward=False)
        self.calls.append((None, False))
        kept = torch.argsort(losses)[: len(losses) // 2]
        closure(kept, backward=True)
        self.calls.append((len(kept), True))
        self.base.step()
        return losses.mean()


class IdRecorder(LossTermMethod):
    """A plugin's loss term that needs sample ids: it records them and adds a zero term."""

    def __init__(self, base: Optimizer) -> None:
        super().__init__(base)
        self.seen: list[Tensor] = []
        self.attached: dict[str, int] = {}

    def attach(self, model: nn.Module, *, num_examples: int, steps_per_epoch: int) -> None:
        self.attached = {"num_examples": num_examples, "steps_per_epoch": steps_per_epoch}

    def loss_term(self, inputs: Tensor, logits: Tensor, index: Tensor | None) -> Tensor:
        assert index is not None
        self.seen.append(index.clone())
        return logits.sum() * 0.0


@pytest.fixture
def plugin(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Registers an entry through the public ``register_optimizer``, as a plugin module does;
    the registry is restored after the test."""
    monkeypatch.setattr(_registry, "_REGISTRY", dict(_registry._REGISTRY))

    def register(name: str, factory: Callable[..., Optimizer], **flags: Any) -> None:
        entry = OptimizerInfo(
            name=name, summary="a plugin", factory=factory, wraps_base=True,
            passes=fixed_passes(1.0), **flags,
        )  # fmt: skip
        register_optimizer(entry)

    return register


def test_a_plugin_can_ask_for_per_example_losses(plugin: Callable[..., None]) -> None:
    plugin("trimmed", lambda base, hp: TrimmedStep(base), needs_per_sample_loss=True)
    session = _session("trimmed")
    sizes = _forward_sizes(session)
    session.train_step(*next(session.batches()))
    assert isinstance(session.optimizer, TrimmedStep)
    assert session.optimizer.calls == [(None, False), (BATCH // 2, True)]
    assert sizes == [BATCH, BATCH // 2]
    assert session.passes == pytest.approx(FORWARD_ONLY_PASS + 0.5)


def test_a_plugin_can_add_a_loss_term_that_sees_sample_ids(plugin: Callable[..., None]) -> None:
    plugin("ids", lambda base, hp: IdRecorder(base), adds_loss_term=True, needs_sample_index=True)
    session = _session("ids", micro_batches=2)
    recorder = session.optimizer
    assert isinstance(recorder, IdRecorder)
    workload = session.workload
    assert recorder.attached == {
        "num_examples": workload.num_train_examples,
        "steps_per_epoch": session.steps_per_epoch,
    }
    x, y, index = next(session.batches())
    session.train_step(x, y, index)
    assert [len(i) for i in recorder.seen] == [BATCH // 2, BATCH // 2]  # one per micro-batch
    assert torch.equal(torch.cat(recorder.seen), index)
    train_x, train_y = workload._require(workload._train)  # type: ignore[attr-defined]
    assert torch.equal(train_x[index], x)
    assert torch.equal(train_y[index], y)


# --- refusals before training ------------------------------------------------------------------
def _loss_only_workload() -> Any:
    data = TensorDataset(torch.randn(32, 4), torch.randint(0, 3, (32,)))
    return custom_workload(
        name="mine", model=lambda: nn.Linear(4, 3), train=data, test=data, batch_size=8,
        epochs=1, loss=nn.functional.cross_entropy,
    )  # fmt: skip


@pytest.mark.parametrize("optimizer", ["esam", "ksam"])
def test_a_workload_without_per_example_losses_is_refused(
    optimizer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    workload = _loss_only_workload()
    assert not workload.provides_per_sample_loss
    info = type(workload).info()
    monkeypatch.setattr(
        "looksam.train.runner.get_workload_info", lambda name: replace(info, name=name)
    )
    config = RunConfig(workload="mine", optimizer=optimizer, device="cpu")
    with pytest.raises(ValueError, match="needs each example's loss") as caught:
        validate_config(config)
    assert "\n" not in str(caught.value)
    validate_config(replace(config, optimizer="sam"))  # the boundary: a plain closure is fine


def test_a_second_pass_share_is_reported_only_where_passes_are_whole_steps() -> None:
    """ESAM's 1.83 passes are not 83 % second-pass steps; late-phase SAM's 1.1 are 10 %."""
    config = RunConfig(workload="digits-noisy", optimizer="esam", max_steps=2, device="cpu")
    esam = run_training(config)
    assert esam.passes_per_step == pytest.approx(get_optimizer_info("esam").passes_per_step())
    assert esam.second_pass_fraction is None
    samk = run_training(replace(config, optimizer="samk", hyperparameters={"k": 2}))
    assert samk.second_pass_fraction == pytest.approx(0.5)  # look, plain


def test_mesa_costs_its_ema_forward_once_on_and_timing_switches_it_on() -> None:
    """Before start_epoch a MESA step is the base's one pass; with the term on, the EMA model's
    forward adds a forward-only pass; a timing replay turns the term on from the first step."""
    off = _session("mesa")  # start_epoch 5: step 0 is before it
    off.train_step(*next(off.batches()))
    assert off.passes == pytest.approx(1.0, abs=1e-12)
    timed = _session("mesa")
    timed.replay_second_passes(None, 10)
    timed.train_step(*next(timed.batches()))
    assert timed.passes == pytest.approx(1.0 + FORWARD_ONLY_PASS, abs=1e-12)
    on = _session("mesa", hyperparameters={"start_epoch": 0}, micro_batches=3)
    on.train_step(*next(on.batches()))
    assert on.passes == pytest.approx(get_optimizer_info("mesa").passes_per_step(), abs=1e-12)
