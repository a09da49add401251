"""What one step of an optimizer does beyond its base: ops dispatched, memory passes, extra memory.

A timing says *how much* a step costs; this says *what it is made of*, so a cost above the pass
floor can be traced to dispatches (which dominate small models, above all on a CPU) or to passes
over parameter memory (which dominate large ones). It runs a few real training steps of the
runner's own ``train_step`` under a :class:`~torch.utils._python_dispatch.TorchDispatchMode` that
sees every ATen operation:

* **ops** — operations dispatched by the step's own code, the closure's forward and backward
  excluded, per plain step and per look step (one with a second pass);
* **passes** — elements those operations read and wrote, in units of |θ| (an in-place update of
  every parameter reads and writes it: 2 passes); metadata-only views count as nothing;
* **extra memory** — peak bytes a step holds (the optimizer's state, and everything allocated
  during the step, closure included, while it is alive) beyond the reference optimizer's peak:
  LookSAM's stored g_v, the perturbed weights w + ε that live through the second pass, the g that
  GSAM keeps. Storages are followed until they are freed, on any device.

Both measures count, they do not time: they are the same on every run of the same code.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from looksam.bench.suite import SuiteSpec, _suite_config
from looksam.optim import LossTermMethod
from looksam.train.runner import TrainingSession

#: Steps profiled per optimizer after warm-up: enough for k = 5 to show a look and a plain step.
PROFILE_STEPS = 10
WARMUP_STEPS = 2


@dataclass(frozen=True)
class StepProfile:
    """One optimizer's step, counted; ``None`` where it has no step of that kind."""

    optimizer: str
    plain_ops: int | None  # ATen ops of a plain step's own code (closure excluded)
    look_ops: int | None  # … of a step with a second pass
    plain_passes: float | None  # elements read + written by those ops, in |θ|
    look_passes: float | None
    state_bytes: int  # optimizer state held between steps (base optimizer's included)
    peak_bytes: int  # state + the most a step allocated and still held at once
    extra_bytes: int = 0  # peak_bytes beyond the reference optimizer's


class _StepCounter(TorchDispatchMode):
    """Counts ops and element traffic outside the closure, and live bytes throughout."""

    def __init__(self, parameter_elements: int) -> None:
        super().__init__()
        self.parameter_elements = max(1, parameter_elements)
        self.in_step = False  # inside optimizer.step …
        self.in_closure = False  # … but not in the closure it calls
        self.ops = 0
        self.elements = 0
        self.live = 0
        self.peak = 0
        self._tracked: set[int] = set()

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = _tensors((args, kwargs))
        held = {t.untyped_storage().data_ptr() for t in inputs}
        fresh = [t for t in _tensors(out) if t.untyped_storage().data_ptr() not in held]
        if self.in_step and not self.in_closure:
            self.ops += 1
            if not getattr(func, "is_view", False):
                self.elements += _traffic(func, args, kwargs, inputs, fresh)
        self._track_new(fresh)
        return out

    def _track_new(self, fresh: list[torch.Tensor]) -> None:
        """Follow the storages an op created (``fresh``: not an input's) until they are freed."""
        for t in fresh:
            storage = t.untyped_storage()
            size = storage.nbytes()
            if size == 0 or id(storage) in self._tracked:
                continue
            self._tracked.add(id(storage))
            self.live += size
            self.peak = max(self.peak, self.live)
            weakref.finalize(storage, self._freed, id(storage), size)

    def _freed(self, key: int, size: int) -> None:
        if key in self._tracked:  # allocated in this step (an earlier step's is not counted)
            self._tracked.discard(key)
            self.live -= size

    def start_step(self) -> None:
        self.ops = 0
        self.elements = 0
        self.live = 0
        self.peak = 0
        self._tracked.clear()

    @property
    def passes(self) -> float:
        return self.elements / self.parameter_elements


def _tensors(tree: Any) -> list[torch.Tensor]:
    return [t for t in tree_leaves(tree) if isinstance(t, torch.Tensor)]


def _traffic(
    func: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    inputs: list[torch.Tensor],
    fresh: list[torch.Tensor],
) -> int:
    """Elements an op reads (every tensor argument) and writes (the arguments its schema marks
    as written, e.g. ``self`` of ``add_`` and every list of ``_foreach_add_``, and the ``fresh``
    outputs, those in storage no input holds)."""
    written = 0
    for i, argument in enumerate(func._schema.arguments):
        alias = argument.alias_info
        if alias is not None and alias.is_write:
            value = args[i] if i < len(args) else kwargs.get(argument.name)
            written += sum(t.numel() for t in _tensors(value))
    return sum(t.numel() for t in inputs) + written + sum(t.numel() for t in fresh)


def _state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of the distinct storages in the optimizer's state (and its base's, for a wrapper),
    plus what a loss-term method keeps outside it (SAF's bank, MESA's EMA model)."""
    kept = optimizer.memory_bytes() if isinstance(optimizer, LossTermMethod) else {}
    storages: dict[int, int] = {}
    for opt in _optimizer_chain(optimizer):
        for t in tree_leaves(list(opt.state.values())):
            if isinstance(t, torch.Tensor) and t.numel() > 0:
                storage = t.untyped_storage()
                storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values()) + sum(kept.values())


def _optimizer_chain(optimizer: torch.optim.Optimizer) -> Iterator[torch.optim.Optimizer]:
    yield optimizer
    base = getattr(optimizer, "base", None)
    if isinstance(base, torch.optim.Optimizer):
        yield base


def _counted_closure(
    counter: _StepCounter, calls: list[int]
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Wraps ``optimizer.step`` so the closure it calls is not counted as the step's own ops."""

    def wrap_step(step: Callable[..., Any]) -> Callable[..., Any]:
        def counted(closure: Callable[..., Any] | None = None, *args: Any, **kwargs: Any) -> Any:
            def uncounted(*closure_args: Any, **closure_kwargs: Any) -> Any:
                calls[0] += 1  # a BatchClosure's subset and forward-only passes count too
                counter.in_closure = True
                try:
                    return (
                        closure(*closure_args, **closure_kwargs) if closure is not None else None
                    )
                finally:
                    counter.in_closure = False

            counter.in_step = True
            try:
                return step(uncounted if closure is not None else None, *args, **kwargs)
            finally:
                counter.in_step = False

        return counted

    return wrap_step


def profile_step(spec: SuiteSpec, optimizer: str, steps: int = PROFILE_STEPS) -> StepProfile:
    """Run ``steps`` training steps of ``optimizer`` in ``spec``'s suite and count each one."""
    session = TrainingSession(_suite_config(spec, optimizer, epochs=10_000))
    session.replay_second_passes(0.5, 2)  # rules and phases: both kinds of step
    batches = session.batches()
    for _ in range(WARMUP_STEPS):
        session.train_step(*next(batches))
    parameters = sum(p.numel() for p in session.model.parameters() if p.requires_grad)
    counter = _StepCounter(parameters)
    calls = [0]
    opt = session.optimizer
    own_step = vars(opt).get("step")
    opt.step = _counted_closure(counter, calls)(opt.step)  # type: ignore[method-assign]
    plain: list[tuple[int, float]] = []
    look: list[tuple[int, float]] = []
    peak = 0
    try:
        with counter:
            for _ in range(steps):
                counter.start_step()
                calls[0] = 0
                session.train_step(*next(batches))
                (look if calls[0] > 1 else plain).append((counter.ops, counter.passes))
                peak = max(peak, counter.peak)
    finally:
        if own_step is None:
            del opt.step
        else:
            opt.step = own_step  # type: ignore[method-assign]
    state = _state_bytes(opt)
    return StepProfile(
        optimizer=optimizer,
        plain_ops=max(o for o, _ in plain) if plain else None,
        look_ops=max(o for o, _ in look) if look else None,
        plain_passes=max(p for _, p in plain) if plain else None,
        look_passes=max(p for _, p in look) if look else None,
        state_bytes=state,
        peak_bytes=state + peak,
    )


def profile_suite(spec: SuiteSpec, steps: int = PROFILE_STEPS) -> tuple[StepProfile, ...]:
    """Every optimizer of ``spec`` profiled, with its extra peak memory over the reference's."""
    names = tuple(dict.fromkeys((spec.reference, *spec.optimizers)))
    profiles = {name: profile_step(spec, name, steps) for name in names}
    reference = profiles[spec.reference].peak_bytes
    return tuple(replace(p, extra_bytes=p.peak_bytes - reference) for p in profiles.values())


def format_bytes(size: int | None, *, signed: bool = False) -> str:
    """``684 KiB``, ``1.3 MiB``, ``+2.0 GiB`` (``signed``: a difference's sign); — for None."""
    if size is None:
        return "—"
    sign = ("+" if size > 0 else "−" if size < 0 else "") if signed else ("−" if size < 0 else "")
    value = float(abs(size))
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            text = f"{value:.0f}" if unit == "B" or value >= 100 else f"{value:.1f}"
            return f"{sign}{text} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
