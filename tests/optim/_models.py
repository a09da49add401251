"""Scaffolding the optimizer tests share, in one place.

* The conftest MLP, its fixed data, closures, snapshots (conftest.py serves them as fixtures).
* The float64 references' setting: the two base optimizers (SGD with Nesterov momentum and weight
  decay, AdamW) built by hand, a model with two param groups (different learning rates) and a
  parameter that never gets a gradient, the literal pieces every reference is written from, and
  one library-against-reference step with the shared tolerances.
* The GradScaler recipes (the runner's and docs/training-loops.md's) and the checks every wrapper's
  mixed-precision tests make with them.

Plain functions and classes, imported as ``from _models import ...`` (pytest puts this folder on
``sys.path``, as it does ``tests/train/distributed`` for ``ddp_workers``).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch.testing import assert_close

# ---------------------------------------------------------------------- model, data, closures

IN_FEATURES, HIDDEN, OUT_FEATURES, BATCH = 5, 8, 3, 16

Closure = Callable[[], Tensor]
#: The conftest fixtures' types, for test signatures.
MakeMLP = Callable[..., nn.Sequential]
MakeBatch = Callable[..., tuple[Tensor, Tensor]]
MakeClosure = Callable[..., Closure]
#: One optimizer step in a GradScaler recipe: (model, opt, scaler, x, y, second_loss_factor).
Recipe = Callable[..., None]


def build_mlp(seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Sequential:
    """A 5-8-3 tanh MLP with a fixed init (smooth, so g_s really differs from g)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = nn.Sequential(
            nn.Linear(IN_FEATURES, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, OUT_FEATURES)
        )
    return model.to(dtype)


def build_batch(
    seed: int = 1, n: int = BATCH, dtype: torch.dtype = torch.float64
) -> tuple[Tensor, Tensor]:
    """A deterministic regression batch (x, y), independent of the global RNG."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, IN_FEATURES, generator=gen, dtype=dtype)
    y = torch.randn(n, OUT_FEATURES, generator=gen, dtype=dtype)
    return x, y


def build_closure(
    model: nn.Module, opt: Any, x: Tensor, y: Tensor, record: list[Tensor] | None = None
) -> Closure:
    """torch's closure contract: zero grads, forward, backward, return the loss.

    Every returned loss is appended to ``record`` (when given), so tests can count calls and check
    which call's loss ``step`` hands back.
    """

    def closure() -> Tensor:
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        if record is not None:
            record.append(loss)
        return loss

    return closure


def build_batch_closure(model: nn.Module, opt: Any, x: Tensor, y: Tensor) -> Any:
    """The BatchClosure contract (``looksam.optim.BatchClosure``) over an MSE regression batch:
    per-example losses of the rows ``subset``, their mean back-propagated when ``backward``."""

    def closure(subset: Tensor | None = None, *, backward: bool = True) -> Tensor:
        xs, ys = (x, y) if subset is None else (x[subset], y[subset])
        if not backward:
            with torch.no_grad():
                return ((model(xs) - ys) ** 2).mean(dim=1)
        opt.zero_grad()
        losses = ((model(xs) - ys) ** 2).mean(dim=1)
        losses.mean().backward()
        return losses.detach()

    return closure


def closure_for(name: str, model: nn.Module, opt: Any, x: Tensor, y: Tensor) -> Any:
    """The closure registry entry ``name`` is driven with: a BatchClosure when it needs
    per-example losses, torch's plain one otherwise."""
    from looksam.optim import get_optimizer_info

    if get_optimizer_info(name).needs_per_sample_loss:
        return build_batch_closure(model, opt, x, y)
    return build_closure(model, opt, x, y)


def snapshot(model: nn.Module) -> list[Tensor]:
    """Detached copies of every parameter, in ``model.parameters()`` order."""
    return [p.detach().clone() for p in model.parameters()]


def flat(tensors: Iterable[Tensor]) -> Tensor:
    """Concatenate tensors into one vector (how the tests form global norms and dot products)."""
    return torch.cat([t.reshape(-1) for t in tensors])


def global_norm(tensors: Iterable[Tensor]) -> float:
    """‖·‖ of the concatenation, as a Python float."""
    return flat(tensors).norm().item()


def run_training(
    make_opt: Callable[[Any], torch.optim.Optimizer],
    steps: int,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    n_batches: int = 3,
) -> tuple[list[Tensor], torch.optim.Optimizer]:
    """Train a fresh ``build_mlp(seed)`` for ``steps`` steps of ``opt.step(closure)``.

    Step t uses batch ``build_batch(100 + t % n_batches)``. Returns the final weights and the
    optimizer (``make_opt`` receives ``model.parameters()``).
    """
    model = build_mlp(seed, dtype)
    opt = make_opt(model.parameters())
    for t in range(steps):
        x, y = build_batch(100 + t % n_batches, dtype=dtype)
        opt.step(build_closure(model, opt, x, y))
    return snapshot(model), opt


def assert_tensors_equal(actual: Iterable[Tensor], expected: Iterable[Tensor]) -> None:
    """Bit for bit (``torch.equal``), tensor by tensor, the two sequences equally long."""
    for i, (a, b) in enumerate(zip(actual, expected, strict=True)):
        assert torch.equal(a, b), f"tensor {i} differs"


def tiny_sgd() -> torch.optim.SGD:
    """A base optimizer over one zero parameter, for argument checks."""
    return torch.optim.SGD([nn.Parameter(torch.zeros(3))], lr=0.1)


def checkpoint_round_trip(model: nn.Module, opt: Any) -> dict[str, Any]:
    """``{"model": ..., "opt": ...}`` state dicts written with ``torch.save`` and read back."""
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    buffer.seek(0)
    checkpoint: dict[str, Any] = torch.load(buffer)
    return checkpoint


# ---------------------------------------------------------------------- the references' setting

#: rtol/atol of every float64 library-against-reference comparison.
CLOSE: dict[str, Any] = {"rtol": 1e-10, "atol": 1e-12}
F32 = torch.float32
F32_CLOSE: dict[str, Any] = {"rtol": 1e-5, "atol": 1e-6}
SCALE = 2.0**16  # GradScaler's default init_scale

#: The two base optimizers, as the registry's hyperparameters (what ``create_optimizer(name,
#: params, base=..., **hp)`` takes); :func:`make_base` builds the identical torch optimizer by
#: hand, from literal values.
BASES: dict[str, dict[str, Any]] = {
    "sgd": {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-2, "nesterov": True},
    "adamw": {"lr": 1e-2, "weight_decay": 1e-2, "beta1": 0.9, "beta2": 0.999},
}
#: Where each base keeps its momentum (MSAM's v, the state a skipped step must leave alone).
MOMENTUM_KEY = {"sgd": "momentum_buffer", "adamw": "exp_avg"}
SECOND_GROUP_LR_FACTOR = 0.3


def make_base(name: str, params: Any) -> torch.optim.Optimizer:
    """``BASES[name]`` written out as a torch optimizer over ``params`` (iterable or groups)."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=1e-2, nesterov=True)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=1e-2, weight_decay=1e-2, betas=(0.9, 0.999))
    raise KeyError(name)


class TwoGroupNet(nn.Module):
    """The conftest MLP plus a parameter the forward pass never touches (its grad stays None)."""

    def __init__(self, mlp: nn.Sequential) -> None:
        super().__init__()
        self.mlp = mlp
        dtype = next(mlp.parameters()).dtype
        self.never_used = nn.Parameter(torch.linspace(-1.0, 1.0, 4, dtype=dtype))
        self.never_used_initial = self.never_used.detach().clone()

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(x)

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Group 0 (first layer): the default lr; group 1 (second layer + the unused parameter):
        ``lr · SECOND_GROUP_LR_FACTOR``."""
        return [
            {"params": list(self.mlp[0].parameters())},
            {
                "params": [*self.mlp[2].parameters(), self.never_used],
                "lr": lr * SECOND_GROUP_LR_FACTOR,
            },
        ]

    def make_base(self, base_name: str) -> torch.optim.Optimizer:
        """The hand-built base over :meth:`param_groups` at the base's own lr."""
        return make_base(base_name, self.param_groups(BASES[base_name]["lr"]))

    def assert_never_used_untouched(self) -> None:
        assert self.never_used.grad is None
        assert torch.equal(self.never_used, self.never_used_initial)


# The literal pieces the references are written from: per-tensor loops, in-place moves, the
# weights restored by copying a saved clone.


def grads_of(params: list[Tensor]) -> list[Tensor]:
    return [p.grad.detach().clone() for p in params]  # type: ignore[union-attr]


def first_gradient(base: torch.optim.Optimizer) -> tuple[list[Tensor], list[Tensor], float]:
    """After the first pass: the base's parameters that have a gradient, copies of those
    gradients (g), and ‖g‖ over them."""
    params = [p for group in base.param_groups for p in group["params"] if p.grad is not None]
    g = grads_of(params)
    return params, g, global_norm(g)


def grads_at_offset(
    params: list[Tensor], offsets: list[Tensor] | None, closure: Closure
) -> list[Tensor]:
    """SAM's second pass: w += offset in place (``None``: stay at w), run the closure, read the
    gradients, copy the saved w back."""
    saved = [p.detach().clone() for p in params]
    if offsets is not None:
        with torch.no_grad():
            for p, e in zip(params, offsets, strict=True):
                p.add_(e)
    closure()
    g_s = grads_of(params)
    with torch.no_grad():
        for p, w in zip(params, saved, strict=True):
            p.copy_(w)
    return g_s


def base_step_with(base: torch.optim.Optimizer, params: list[Tensor], grads: list[Tensor]) -> None:
    """Hand the base optimizer ``grads`` as the parameters' gradients and let it step."""
    for p, u in zip(params, grads, strict=True):
        p.grad = u
    base.step()


class ReferenceGv:
    """LookSAM's g_v as stated: on a look step g_s minus its projection on g; on the other steps
    g + α·‖g‖/‖g_v‖·g_v (plain g while there is no g_v or α = 0). With ``reused=False`` (SAM,
    SAM-k, AE-SAM) no g_v is kept and the other steps use g."""

    def __init__(self, alpha: float, reused: bool = True) -> None:
        self.alpha, self.reused = alpha, reused
        self.g_v: list[Tensor] = []
        self.norm = 0.0

    def gradient(self, g: list[Tensor], g_norm: float, g_s: list[Tensor] | None) -> list[Tensor]:
        """What the base steps with: g_s on a look step (``g_s`` given), else g (+ g_v's term)."""
        if g_s is not None:
            if self.reused:
                beta = torch.dot(flat(g), flat(g_s)).item() / g_norm**2 if g_norm else 0.0
                self.g_v = [gs - beta * gi for gs, gi in zip(g_s, g, strict=True)]
                self.norm = global_norm(self.g_v)
            return g_s
        if self.reused and self.alpha > 0.0 and self.norm > 0.0:
            coef = self.alpha * g_norm / self.norm
            return [gi + coef * v for gi, v in zip(g, self.g_v, strict=True)]
        return g


def step_side_by_side(
    t: int,
    lib: Any,
    lib_net: nn.Module,
    ref: Any,
    ref_net: nn.Module,
    record: list[Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """Step ``t`` of the library optimizer and of the reference (which has a ``base``) on batch
    ``build_batch(100 + t % 4)``: the losses and every weight agree to :data:`CLOSE`. The
    library's closure appends its losses to ``record`` when given. Returns the batch."""
    x, y = build_batch(100 + t % 4)
    lib_loss = lib.step(build_closure(lib_net, lib, x, y, record))
    ref_loss = ref.step(build_closure(ref_net, ref.base, x, y))
    assert_close(lib_loss, ref_loss, **CLOSE, msg=f"loss differs at step {t}")
    assert_close(
        list(lib_net.parameters()),
        list(ref_net.parameters()),
        **CLOSE,
        msg=lambda m, t=t: f"weights differ after step {t}: {m}",
    )
    return x, y


# ---------------------------------------------------------------------- GradScaler recipes


def runner_recipe_step(
    model: nn.Module,
    opt: Any,
    scaler: torch.amp.GradScaler,
    x: Tensor,
    y: Tensor,
    second_loss_factor: float = 1.0,
) -> None:
    """The runner's fp16 path: the optimizer runs both passes and is handed the scaler."""

    def closure() -> Tensor:
        opt.zero_grad()
        factor = second_loss_factor if opt.in_second_pass else 1.0
        loss = factor * nn.functional.mse_loss(model(x), y)
        scaler.scale(loss).backward()
        return loss.detach()

    opt.step(
        closure,
        base_step=lambda: scaler.step(opt.base),
        unscale=lambda: scaler.unscale_(opt),
    )
    scaler.update()


def readme_recipe_step(
    model: nn.Module,
    opt: Any,
    scaler: torch.amp.GradScaler,
    x: Tensor,
    y: Tensor,
    second_loss_factor: float = 1.0,
    *,
    tell_grad_scale: bool = False,
) -> None:
    """The documented two-phase recipe: the second pass only where ``is_look_step`` asks for it.
    ``tell_grad_scale``: ``first_step`` is told the scale g_s comes at (GSAM; g was unscaled)."""
    opt.zero_grad()
    scaler.scale(nn.functional.mse_loss(model(x), y)).backward()
    if opt.is_look_step:
        scaler.unscale_(opt)
        if tell_grad_scale:
            opt.first_step(grad_scale=scaler.get_scale())
        else:
            opt.first_step()
        loss2 = second_loss_factor * nn.functional.mse_loss(model(x), y)
        scaler.scale(loss2).backward()
    opt.second_step(lambda: scaler.step(opt.base))
    scaler.update()


def check_scaled_matches_unscaled(
    make_opt: Callable[[nn.Module], Any],
    recipe: Recipe,
    init_scale: float = SCALE,
    each_step: Callable[[Any], None] | None = None,
    steps: int = 6,
) -> None:
    """``steps`` fp32 steps of the recipe == as many unscaled ``step(closure)`` steps (F32_CLOSE),
    the scale never backs off, and no step is left in its second pass. ``each_step`` gets the
    scaled optimizer after every step."""
    x, y = build_batch(dtype=F32)
    scaled_model, plain_model = build_mlp(dtype=F32), build_mlp(dtype=F32)
    scaled, plain = make_opt(scaled_model), make_opt(plain_model)
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
    for _ in range(steps):
        recipe(scaled_model, scaled, scaler, x, y)
        plain.step(build_closure(plain_model, plain, x, y))
        if each_step is not None:
            each_step(scaled)
    assert scaler.get_scale() == init_scale
    assert scaled.steps_done == plain.steps_done == steps
    assert not scaled.in_second_pass
    assert_close(list(scaled_model.parameters()), list(plain_model.parameters()), **F32_CLOSE)


def check_g_overflow_skips(make_opt: Callable[[nn.Module], Any], recipe: Recipe) -> None:
    """init_scale 3e38 overflows the first backward: no perturbation, no update, the base has no
    state, the scale backs off."""
    model = build_mlp(dtype=F32)
    x, y = build_batch(dtype=F32)
    opt = make_opt(model)
    scaler = torch.amp.GradScaler("cpu", init_scale=3e38)
    before = snapshot(model)
    recipe(model, opt, scaler, 1e3 * x, y)
    assert_tensors_equal(model.parameters(), before)
    assert len(opt.base.state) == 0
    assert scaler.get_scale() < 3e38


def check_gs_overflow_skips(
    make_opt: Callable[[nn.Module], Any],
    recipe: Recipe,
    steps_before: int,
    factor: float = 1e37,
    kept: Callable[[Any, nn.Module], list[Tensor]] | None = None,
) -> None:
    """After ``steps_before`` normal steps (init_scale 2⁸, SGD with momentum), g finite but g_s
    overflowing (the second loss × ``factor``): w restored bit for bit and not updated, the
    momentum and whatever ``kept(opt, model)`` returns untouched, the step not left in its second
    pass, the scale halved; the next step trains normally."""
    model = build_mlp(dtype=F32)
    x, y = build_batch(dtype=F32)
    opt = make_opt(model)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    while opt.steps_done < steps_before:
        recipe(model, opt, scaler, x, y)
    assert opt.is_look_step

    def momentum() -> list[Tensor]:
        return [opt.base.state[p]["momentum_buffer"] for p in model.parameters()]

    def kept_state() -> list[Tensor]:
        return [] if kept is None else kept(opt, model)

    before = snapshot(model)
    momentum_before = [m.clone() for m in momentum()]
    kept_before = [t.clone() for t in kept_state()]

    recipe(model, opt, scaler, x, y, second_loss_factor=factor)

    assert_tensors_equal(model.parameters(), before)
    assert_tensors_equal(momentum(), momentum_before)
    assert_tensors_equal(kept_state(), kept_before)
    assert not opt.in_second_pass
    assert scaler.get_scale() == 2.0**7

    recipe(model, opt, scaler, x, y)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert not all(torch.equal(p, w) for p, w in zip(model.parameters(), before, strict=True))
