"""The runner's accounting: passes, timing exclusions, divergence, OOM, seeding, results."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from looksam.optim import get_optimizer_info
from looksam.train import runner
from looksam.train.runner import RunConfig, RunResult, run_training, validate_config
from looksam.train.workloads import create_workload
from looksam.train.workloads.digits import DigitsNoisy, DigitsNoisyCNN


def digits(optimizer: str, **overrides) -> RunConfig:
    fields = {"epochs": 1, "device": "cpu", "timing_warmup_steps": 2}
    fields.update(overrides)
    return RunConfig("digits-noisy", optimizer, **fields)


@pytest.mark.parametrize(
    ("optimizer", "hp"),
    [
        ("sgd", {}),
        ("sam", {}),
        ("samk", {"k": 5}),
        ("looksam", {"k": 5}),
        ("layerlooksam", {"k": 3}),
    ],
)
def test_passes_counted_match_the_declared_cost(optimizer: str, hp: dict) -> None:
    k = hp.get("k", 1)
    steps = 15  # a multiple of every k used here
    result = run_training(digits(optimizer, hyperparameters=hp, max_steps=steps))
    assert result.status == "ok"
    assert result.steps == steps
    declared = get_optimizer_info(optimizer).passes_per_step({"k": k}) * steps
    assert result.forward_backward_passes == pytest.approx(declared)


class _FakeClock:
    """A clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class _TimedDigits(DigitsNoisy):
    """Each forward-backward pass costs 1 fake second, each evaluation 100 fake seconds."""

    clock: _FakeClock

    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        if torch.is_grad_enabled():
            self.clock.t += 1.0
        return super().loss(logits, targets)

    def eval_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        self.clock.t += 100.0
        yield from super().eval_batches(batch_size)


def test_training_time_excludes_evaluation(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _FakeClock()
    monkeypatch.setattr(runner, "now", clock)
    workload = _TimedDigits()
    workload.clock = clock
    result = run_training(digits("looksam", epochs=3, hyperparameters={"k": 2}), workload=workload)
    evaluations = len(result.history)
    assert evaluations == 3
    assert clock.t == result.forward_backward_passes + 100.0 * evaluations
    assert result.train_seconds == result.forward_backward_passes  # not one eval second in it
    assert result.warmup_seconds == pytest.approx(3.0)  # steps 0-1: look (2 passes) + plain (1)
    cumulative = [h.train_seconds for h in result.history]
    assert cumulative == sorted(cumulative)
    assert cumulative[-1] == result.train_seconds
    # throughput counts only the timed steps after warm-up
    timed_steps = result.steps - 2
    expected = timed_steps * 64 / (result.train_seconds - result.warmup_seconds)
    assert result.samples_per_second == pytest.approx(expected)


def test_divergence_is_a_result_not_a_crash() -> None:
    result = run_training(digits("sgd", lr=1e6, epochs=3))
    assert result.status == "diverged"
    assert "non-finite" in result.message
    assert result.final_accuracy is None
    assert result.steps < 3 * DigitsNoisy().steps_per_epoch(64)


class _OomAtThirdStep(DigitsNoisy):
    calls = 0

    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        self.calls += 1
        if self.calls == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().loss(logits, targets)


def test_out_of_memory_is_a_result() -> None:
    result = run_training(digits("sgd"), workload=_OomAtThirdStep())
    assert result.status == "oom"
    assert result.steps == 2
    assert "out of memory" in result.message


def test_same_seed_same_run_other_seed_other_run() -> None:
    a = run_training(digits("looksam", epochs=2, seed=3))
    b = run_training(digits("looksam", epochs=2, seed=3))
    c = run_training(digits("looksam", epochs=2, seed=4))
    assert [h.train_loss for h in a.history] == [h.train_loss for h in b.history]
    assert a.final_accuracy == b.final_accuracy
    assert [h.train_loss for h in a.history] != [h.train_loss for h in c.history]


def test_perturbed_pass_leaves_batchnorm_statistics_alone() -> None:
    workload = DigitsNoisyCNN()
    result = run_training(
        RunConfig("digits-noisy-cnn", "sam", max_steps=6, device="cpu"), workload=workload
    )
    assert result.forward_backward_passes == 12
    session_model_bn = [
        m for m in _last_model(workload).modules() if isinstance(m, nn.BatchNorm2d)
    ]
    assert session_model_bn
    assert all(int(m.num_batches_tracked) == 6 for m in session_model_bn)


def _last_model(workload: DigitsNoisyCNN) -> nn.Module:
    return workload.last_model  # type: ignore[attr-defined]


@pytest.fixture(autouse=True)
def _remember_models(monkeypatch: pytest.MonkeyPatch) -> None:
    original = DigitsNoisyCNN.build_model

    def build(self: DigitsNoisyCNN) -> nn.Module:
        model = original(self)
        self.last_model = model  # type: ignore[attr-defined]
        return model

    monkeypatch.setattr(DigitsNoisyCNN, "build_model", build)


def test_time_to_target_is_the_first_epoch_at_target() -> None:
    result = run_training(digits("sam", epochs=4, hyperparameters={"rho": 0.1}))
    target = create_workload("digits-noisy").target_accuracy
    reached = [h for h in result.history if h.test_accuracy >= target]
    if reached:
        assert result.time_to_target_seconds == reached[0].train_seconds
    else:
        assert result.time_to_target_seconds is None
    assert result.best_accuracy == max(h.test_accuracy for h in result.history)


def test_result_round_trips_through_json(tmp_path: Path) -> None:
    result = run_training(digits("samk", max_steps=5, hyperparameters={"k": 2}))
    path = tmp_path / "r.json"
    result.write_json(path)
    again = RunResult.from_dict(json.loads(path.read_text()))
    assert again == result
    assert again.environment.torch_version == torch.__version__


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"workload": "imagenet-9000"}, "unknown workload"),
        ({"optimizer": "adagrad"}, "unknown optimizer"),
        ({"hyperparameters": {"k": 0}}, "k must be"),
        ({"hyperparameters": {"rho": -0.1}}, "rho must be"),
        ({"hyperparameters": {"alpha": -1.0}}, "alpha must be"),
        ({"batch_size": 0}, "batch size"),
        ({"epochs": 0}, "epochs"),
        ({"amp": "fp8"}, "amp"),
        ({"device": "tpu"}, "unknown device"),
        ({"base": "rmsprop"}, "unknown base"),
    ],
)
def test_bad_configs_are_rejected_before_work(overrides: dict, message: str) -> None:
    fields = {"workload": "digits-noisy", "optimizer": "looksam"}
    fields.update(overrides)
    with pytest.raises(ValueError, match=message):
        validate_config(RunConfig(**fields))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_gpu_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no CUDA GPU"):
        validate_config(RunConfig("digits-noisy", "sgd", device="cuda"))


def test_bf16_autocast_and_grad_clip_run() -> None:
    result = run_training(
        digits("looksam", max_steps=6, amp="bf16", grad_clip=1.0, hyperparameters={"k": 3})
    )
    assert result.status == "ok"
    assert result.forward_backward_passes == 8


def test_fp16_gradscaler_recipe_runs_on_cpu() -> None:
    result = run_training(digits("looksam", max_steps=6, amp="fp16", hyperparameters={"k": 3}))
    assert result.status == "ok"
    assert result.forward_backward_passes == 8


def test_batch_larger_than_the_data_is_refused() -> None:
    with pytest.raises(ValueError, match="exceeds the 1257 training examples"):
        run_training(digits("sgd", batch_size=5000))


class _ScriptedAccuracy(DigitsNoisy):
    """Each forward-backward pass costs 1 fake second; evaluations return scripted accuracies."""

    target_accuracy = 0.9
    clock: _FakeClock

    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        if torch.is_grad_enabled():
            self.clock.t += 1.0
        return super().loss(logits, targets)


def test_time_to_target_is_the_cumulative_train_time_of_the_first_epoch_at_target(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = _FakeClock()
    monkeypatch.setattr(runner, "now", clock)
    accuracies = iter([0.5, 0.89, 0.9, 0.95, 0.6])  # first reaches 0.9 (>=) at epoch 3
    monkeypatch.setattr(runner.TrainingSession, "evaluate", lambda self: next(accuracies))
    workload = _ScriptedAccuracy()
    workload.clock = clock
    result = run_training(digits("sgd", epochs=5), workload=workload)
    per_epoch = workload.steps_per_epoch(64)  # SGD: one pass, so one fake second, per step
    assert [h.test_accuracy for h in result.history] == [0.5, 0.89, 0.9, 0.95, 0.6]
    assert [h.train_seconds for h in result.history] == [per_epoch * e for e in range(1, 6)]
    assert result.time_to_target_seconds == 3 * per_epoch


def test_time_to_target_is_none_when_no_epoch_reaches_it(monkeypatch: pytest.MonkeyPatch) -> None:
    accuracies = iter([0.5, 0.89])
    monkeypatch.setattr(runner.TrainingSession, "evaluate", lambda self: next(accuracies))
    workload = _ScriptedAccuracy()
    workload.clock = _FakeClock()
    result = run_training(digits("sgd", epochs=2), workload=workload)
    assert result.time_to_target_seconds is None


class _LossTurnsNonFinite(DigitsNoisy):
    """From the 4th training step on, the reported loss is ``value`` (+inf or NaN); gradients
    stay finite, so only the loss check can notice (the weights never go bad)."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value
        self.steps = 0

    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        loss = super().loss(logits, targets)
        if not torch.is_grad_enabled():
            return loss
        self.steps += 1
        return loss + self.value if self.steps > 3 else loss  # the constant has no gradient


@pytest.mark.parametrize("value", [math.inf, math.nan], ids=["inf", "nan"])
def test_an_infinite_or_nan_loss_ends_the_run_at_the_next_check(value: float) -> None:
    # Checks come at step 2 (end of the timing warm-up), then every TIMING_CHUNK = 10 steps:
    # the first one after step 4 is step 12, well before the epoch ends (step 19).
    result = run_training(digits("sgd"), workload=_LossTurnsNonFinite(value))
    assert result.status == "diverged"
    assert result.message == "non-finite training loss by step 12"
    assert result.steps == 12
    assert result.final_accuracy is None
    assert result.history == ()
