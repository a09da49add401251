r"""RWP (Li et al., 2022): the gradient at a random, filter-wise scaled Gaussian perturbation.

Li, Yan, Lei, Wu, Fang, Yang, Huang, "Efficient Generalization Improvement Guided by Random Weight
Perturbation", arXiv:2211.11489 (2022); official code github.com/nblt/RWP.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from looksam.optim._foreach import accumulation_dtype, group_by_device_and_dtype
from looksam.optim._one_pass import OnePassOptimizer
from looksam.optim._random import DeviceGenerators, check_seed, draw_seed

#: How 1-D (and 0-D) parameters are scaled: each entry a filter of its own, or the whole tensor.
VECTOR_SCALES = ("element", "tensor")


def check_gamma(gamma: float) -> float:
    """Validate γ (the noise's scale relative to each filter's norm): a finite real ≥ 0."""
    allowed = "a finite number >= 0 (0 disables the perturbation)"
    if isinstance(gamma, bool) or not isinstance(gamma, numbers.Real):
        raise ValueError(f"gamma must be {allowed}, got {gamma!r}")
    if not math.isfinite(gamma) or gamma < 0:
        raise ValueError(f"gamma must be {allowed}, got {gamma!r}")
    return float(gamma)


def check_vector_scale(vector_scale: str) -> str:
    """Validate how 1-D parameters are scaled: one of :data:`VECTOR_SCALES`."""
    if not isinstance(vector_scale, str) or vector_scale not in VECTOR_SCALES:
        raise ValueError(
            "vector_scale must be 'element' (std γ·|w_j| for each entry of a 1-D parameter) or "
            f"'tensor' (std γ·‖w‖, the official code's rule), got {vector_scale!r}"
        )
    return vector_scale


def filter_lengths(param: Tensor, vector_scale: str) -> list[int]:
    """The lengths of the consecutive filters of ``param`` (flattened row-major): each output
    row of a tensor with ≥ 2 dimensions, each entry (``"element"``) or the whole of a 1-D or
    0-D tensor (``"tensor"``)."""
    if param.dim() >= 2:
        rows = param.shape[0]
        return [param.numel() // rows] * rows
    if vector_scale == "element":
        return [1] * param.numel()
    return [param.numel()]


@dataclass
class _Layout:
    """One (device, dtype) bucket of perturbed parameters: its filters and its noise buffers,
    made once (and again only when the parameters change), with every view of them."""

    params: list[Tensor]
    lengths: Tensor  # int64 on the bucket's device: the length of every filter, in order
    device: torch.device
    noise: Tensor  # (Σ numel,): scratch for w², then ε (kept: its views are made once)
    noise_views: list[Tensor]  # per parameter, in its shape
    noise_rows: list[Tensor]  # per parameter, (filters, filter length)
    std: Tensor  # (filters,): γ·‖filter‖
    std_cols: list[Tensor]  # per parameter, (filters, 1)


def _layout(params: list[Tensor], vector_scale: str) -> _Layout:
    """The buffers and views of one bucket (all its parameters on one device, in one dtype)."""
    per_param = [filter_lengths(p, vector_scale) for p in params]
    device, dtype = params[0].device, params[0].dtype
    lengths = [n for filters in per_param for n in filters]
    noise = torch.zeros(sum(lengths), device=device, dtype=dtype)
    std = torch.zeros(len(lengths), device=device, dtype=dtype)
    chunks = noise.split([p.numel() for p in params])
    stds = std.split([len(filters) for filters in per_param])
    return _Layout(
        params=params,
        lengths=torch.tensor(lengths, dtype=torch.int64, device=device),
        device=device,
        noise=noise,
        noise_views=[c.view(p.shape) for c, p in zip(chunks, params, strict=True)],
        noise_rows=[c.view(len(f), -1) for c, f in zip(chunks, per_param, strict=True)],
        std=std,
        std_cols=[s.view(-1, 1) for s in stds],
    )


class RWP(OnePassOptimizer):
    r"""Random weight perturbation: one pass per step, at w + ε with filter-wise Gaussian ε.

    Li et al., arXiv:2211.11489, single-device form. With W_{l,i} the i-th filter (output row) of
    a parameter W_l with at least two dimensions:

    .. math::
        ε_{l,i} \sim \mathcal{N}\big(0,\ (γ\,‖W_{l,i}‖)^2 I\big), \qquad
        g_t = ∇L(w_t + ε_t), \qquad w_{t+1} = \text{base\_step}(w_t, g_t)

    i.e. every entry of a filter gets noise of standard deviation γ times that filter's norm
    (the norm of w_t, before the step), so the perturbation follows each filter's scale. The
    base optimizer steps from w, not from w + ε: w + ε exists only during the forward-backward
    pass (built out of place, ``param.data`` pointed at it and then back at w's own storage), so
    after ``step()`` the parameters hold w exactly.

    1-D parameters (biases, normalisation weights) and 0-D ones. ``vector_scale="tensor"`` (the
    default) is the official code's rule: std γ·(‖w‖ + 1e-16) for the whole tensor (this
    implementation leaves out the 1e-16, so a zero tensor gets no noise). ``"element"`` treats
    each entry as a filter of its own: std γ·|w_j|. The paper's own text on 1-D parameters could
    not be read when this was written (only its abstract: "filter-wise random weight
    perturbations"), so the default follows the only concrete source, the official code.

    Defaults and sources: γ = 0.01, the official code's default (``--gamma``, "Perturbation
    magnitude gamma for RWP") and its CIFAR recipe (``recipes/run_rwp_ddp.sh``); its ImageNet
    recipe uses γ = 0.005. γ = 0 is exactly the base optimizer.

    Scope: the paper jointly optimises the perturbed and the original loss (its abstract); the
    official code mixes the two gradients as (1 − α)·∇L(w) + α·∇L(w + ε), α = 0.5 (``--alpha``),
    computing them on two GPUs in parallel, one loss per rank (the authors' follow-up,
    arXiv:2404.00357, calls this mixed form m-RWP). That two-pass / two-device form is out of
    scope here; this class is the single-device RWP, the code's α = 1: the whole gradient is
    taken at w + ε.

    Differences from the official code: besides ``vector_scale``, the code perturbs in place and
    subtracts the noise again ((w + ε) − ε, which need not round back to w); here w is restored
    exactly. Noise is drawn from this optimizer's own generator (the code uses torch's global
    one), all of a bucket's noise in one draw rather than one per parameter.

    Randomness. A ``torch.Generator`` on the parameters' device (one per device), seeded at
    construction from ``seed`` (None: drawn from torch's global RNG, so ``torch.manual_seed``
    makes a run reproducible). Its state travels in ``state_dict()``: a resumed run draws the
    same noise as an uninterrupted one. Noise comes in the parameters' dtype (the filters' norms
    are taken in float32 for half-precision parameters). Under DDP each rank may draw its own
    noise (the gradients at the ranks' different w + ε are averaged, and every rank steps
    identically); the perturbation needs no gradient, so there is no per-rank variant.

    Cost: one forward-backward pass per step (``is_look_step`` is always False), no host read,
    and per (device, dtype) bucket a handful of whole-bucket operations, whatever the number of
    parameters: w copied into the bucket's noise buffer (one foreach copy), the filters' norms
    (one segmented sum), one draw of the bucket's noise, the per-filter scale (one broadcasting
    foreach multiply; on CUDA the multi-tensor kernel needs equal shapes, so this one runs as a
    loop of kernels inside torch, not in Python) and one fused add for w + ε. Memory: the noise
    buffer, one |θ| in the parameters' dtype, is kept between steps so that its per-parameter
    views are made once; w + ε takes one more |θ| while it exists. The per-parameter Python work
    left in a step is pointing each ``param.data`` at its w + ε and back, as every wrapper here
    does. BatchNorm running statistics are gathered at w + ε (the one pass is the training
    pass, as in the official code).

    Args:
        base: the optimizer that applies the update, built on the same params.
        gamma: γ ≥ 0, the noise's standard deviation relative to each filter's norm.
        vector_scale: ``"element"`` or ``"tensor"``: how 1-D and 0-D parameters are scaled.
        seed: the noise generator's seed; None draws one from torch's global RNG.
        scalars: accepted for the engine's signature; RWP has no scalars to place.

    Example::

        base = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
        opt = RWP(base, gamma=0.01)
        loss = opt.step(closure)  # one pass, at w + ε

        # or, two-phase (frameworks that own the backward pass):
        opt.perturb()
        loss_fn(model(x), y).backward()
        opt.step()
    """

    def __init__(
        self,
        base: Optimizer,
        *,
        gamma: float = 0.01,
        vector_scale: str = "tensor",
        seed: int | None = None,
        scalars: str = "auto",
    ) -> None:
        self.gamma = check_gamma(gamma)
        self.vector_scale = check_vector_scale(vector_scale)
        checked_seed = check_seed(seed)
        super().__init__(base, rho=0.0, k=1, scalars=scalars)
        #: The noise generators, one per device, made in order of appearance.
        self._random = DeviceGenerators(draw_seed(checked_seed))
        for group in self.param_groups:
            for p in group["params"]:
                self._random.on(p.device)
        self._layout_key: tuple[Any, ...] = ()
        self._layouts: list[_Layout] = []

    def _perturbed_buckets(self) -> list[tuple[list[Tensor], list[Tensor]]]:
        """w + ε per bucket, fresh noise each call; nothing to move with γ = 0."""
        gamma = check_gamma(self.gamma)
        if gamma == 0.0:
            return []
        return [
            (layout.params, self._perturbed_weights_of(layout, gamma))
            for layout in self._current_layouts()
        ]

    # ------------------------------------------------------------------ the noise
    def noise(self, layout: _Layout, gamma: float, weights: list[Tensor]) -> list[Tensor]:
        """ε for one bucket, N(0, (γ·‖filter‖)²) per filter, as views in each parameter's shape
        (of the bucket's noise buffer: valid until the next call).

        Whole-bucket operations only: w copied into the buffer (one foreach copy), the filters'
        norms in one segmented sum over it (in the accumulation dtype), the bucket's noise in one
        draw, the scale applied with one (broadcasting) foreach multiply.
        """
        torch._foreach_copy_(layout.noise_views, weights)
        dtype = accumulation_dtype(layout.noise.dtype)
        squares = layout.noise if dtype == layout.noise.dtype else layout.noise.to(dtype)
        squares.square_()
        # ``unsafe`` skips checking that the lengths add up to the buffer's size (a host read);
        # they do by construction.
        norms = torch.segment_reduce(squares, "sum", lengths=layout.lengths, unsafe=True)
        del squares
        layout.std.copy_(norms.sqrt_().mul_(gamma))
        layout.noise.normal_(generator=self._random.on(layout.device))
        torch._foreach_mul_(layout.noise_rows, layout.std_cols)
        return layout.noise_views

    def _perturbed_weights_of(self, layout: _Layout, gamma: float) -> list[Tensor]:
        """w + ε for one bucket, out of place (fresh, aligned storage): one fused add."""
        weights = self._storage_aliases(layout.params)
        return list(torch._foreach_add(weights, self.noise(layout, gamma, weights)))

    # ------------------------------------------------------------------ helpers
    def _current_layouts(self) -> list[_Layout]:
        """The perturbed parameters (every one that requires a gradient and is not empty),
        grouped by (device, dtype), with their buffers: rebuilt only when the parameters or
        ``vector_scale`` change."""
        params = [
            p
            for group in self.param_groups
            for p in group["params"]
            if p.requires_grad and p.numel() > 0
        ]
        key = (*map(id, params), self.vector_scale)
        if key != self._layout_key:
            grouped = group_by_device_and_dtype(params) if params else []
            self._layouts = [_layout(bucket, self.vector_scale) for (bucket,) in grouped]
            self._layout_key = key
            self._aliases.clear()  # they belong to the old lists
        return self._layouts

    # ------------------------------------------------------------------ checkpointing
    @property
    def seed(self) -> int:
        """The noise generators' seed (the first device's; the n-th device's is seed + n)."""
        return self._random.seed

    def _extra_state(self) -> dict[str, Any]:
        return {"seed": self.seed, "rng_states": self._random.states()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a checkpoint (a pending perturbation is undone first), the noise generators'
        states included; a checkpoint without them fails before anything changes."""
        extra = state_dict.get("sam_family", {})
        states = extra.get("rng_states")
        if (
            "seed" not in extra
            or not isinstance(states, dict)
            or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in states.items())
        ):
            raise ValueError(
                "not an RWP state_dict: sam_family lacks 'seed' or 'rng_states' (the noise "
                "generators' states, a tensor per device)"
            )
        check_seed(extra["seed"])
        super().load_state_dict(state_dict)
        self._layout_key = ()  # rebuilt (and the aliases with it) on the next step

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        self._random.load(int(extra.pop("seed")), extra.pop("rng_states"))
        super()._load_extra_state(extra)

    def __repr__(self) -> str:
        return (
            f"RWP(base={type(self.base).__name__}, gamma={self.gamma}, "
            f"vector_scale={self.vector_scale!r}, seed={self.seed}, "
            f"steps_done={self.steps_done})"
        )
