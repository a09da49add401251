"""The built-in registry entries: the base optimizers and the SAM family, with their factories.

The machinery (:class:`~looksam.optim._registry.OptimizerInfo`, :func:`register_optimizer`, the
lookups) lives in ``_registry.py``; this module only describes the entries and registers them when
``looksam.optim`` is imported, exactly as a plugin registers its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch.optim import Optimizer

from looksam.optim._contract import FORWARD_ONLY_PASS
from looksam.optim._registry import (
    HyperParameter,
    OptimizerInfo,
    every_k_passes,
    fixed_passes,
    fixed_range,
    register_optimizer,
)


def _hp_lr(default: float, search: tuple[float, float]) -> HyperParameter:
    return HyperParameter("lr", default, 0.0, None, help="learning rate", search=search, log=True)


def _hp_rho(default: float = 0.05, search: tuple[float, float] = (0.01, 1.0)) -> HyperParameter:
    return HyperParameter(
        "rho",
        default,
        0.0,
        None,
        help="perturbation radius ρ",
        search=search,
        log=True,
        sensitivity=True,
    )


def _hp_k() -> HyperParameter:
    return HyperParameter(
        "k",
        5,
        1,
        None,
        kind="int",
        help="compute g_s every k-th step",
        search=(2, 10),
        sensitivity=True,
    )


def _hp_alpha() -> HyperParameter:
    return HyperParameter(
        "alpha",
        0.7,
        0.0,
        None,
        help="weight α of the reused g_v",
        search=(0.1, 1.0),
        sensitivity=True,
    )


def _adam_like(lr: float, weight_decay: float) -> tuple[HyperParameter, ...]:
    return (
        _hp_lr(lr, (lr / 10, lr * 10)),
        HyperParameter("weight_decay", weight_decay, 0.0, None, help="decoupled weight decay"),
        HyperParameter("beta1", 0.9, 0.0, 1.0, high_open=True, help="first-moment decay"),
        HyperParameter("beta2", 0.999, 0.0, 1.0, high_open=True, help="second-moment decay"),
    )


def _make_sgd(params: Iterable[Any], hp: Mapping[str, Any]) -> Optimizer:
    return torch.optim.SGD(
        params,
        lr=hp["lr"],
        momentum=hp["momentum"],
        weight_decay=hp["weight_decay"],
        nesterov=hp["nesterov"] and hp["momentum"] > 0,
    )


def _make_adamw(params: Iterable[Any], hp: Mapping[str, Any]) -> Optimizer:
    return torch.optim.AdamW(
        params, lr=hp["lr"], weight_decay=hp["weight_decay"], betas=(hp["beta1"], hp["beta2"])
    )


def _make_lamb(params: Iterable[Any], hp: Mapping[str, Any]) -> Optimizer:
    from timm.optim import Lamb  # imported lazily: timm takes seconds to import

    return Lamb(
        params, lr=hp["lr"], weight_decay=hp["weight_decay"], betas=(hp["beta1"], hp["beta2"])
    )


def _make_sam(base: Optimizer, hp: Mapping[str, Any]) -> Optimizer:
    from looksam.optim.sam import SAM

    return SAM(base, rho=hp["rho"], adaptive=hp["adaptive"])


def _make_samk(base: Optimizer, hp: Mapping[str, Any]) -> Optimizer:
    from looksam.optim.samk import SAMk

    return SAMk(base, rho=hp["rho"], k=hp["k"])


def _make_looksam(base: Optimizer, hp: Mapping[str, Any]) -> Optimizer:
    from looksam.optim.looksam import LookSAM

    return LookSAM(base, rho=hp["rho"], k=hp["k"], alpha=hp["alpha"])


def _make_layerlooksam(base: Optimizer, hp: Mapping[str, Any]) -> Optimizer:
    from looksam.optim.layer_looksam import LayerLookSAM

    return LayerLookSAM(base, rho=hp["rho"], k=hp["k"], alpha=hp["alpha"])


def _make_msam(base: Optimizer, hp: Mapping[str, Any]) -> Optimizer:
    from looksam.optim.msam import MSAM

    return MSAM(base, rho=hp["rho"])


def _make_aesam(base: Optimizer, hp: Mapping[str, Any], *, total_steps: int) -> Optimizer:
    from looksam.optim.aesam import AESAM

    return AESAM(base, rho=hp["rho"], total_steps=total_steps, **_policy(hp))


def _make_aelooksam(base: Optimizer, hp: Mapping[str, Any], *, total_steps: int) -> Optimizer:
    from looksam.optim.aesam import AELookSAM

    return AELookSAM(
        base, rho=hp["rho"], alpha=hp["alpha"], total_steps=total_steps, **_policy(hp)
    )


def _policy(hp: Mapping[str, Any]) -> dict[str, Any]:
    return {"delta": hp["delta"], "lambda1": hp["lambda1"], "lambda2": hp["lambda2"]}


#: AE-SAM's adaptive rule (Jiang et al., ICLR 2023, Sec. 3.1, with its defaults).
_AE_POLICY = (
    HyperParameter(
        "delta",
        0.9,
        0.0,
        1.0,
        high_open=True,
        help="EMA rate δ of ‖g‖² statistics (0 < δ < 1)",
        search=(0.8, 0.99),
    ),
    HyperParameter(
        "lambda1",
        -1.0,
        help="threshold c_t at the end of the run (c falls from λ2 to λ1)",
        search=(-2.0, 0.0),
    ),
    HyperParameter(
        "lambda2",
        1.0,
        help="threshold c_t at the start (SAM when ‖g‖² ≥ μ + c_t·σ)",
        search=(0.0, 2.0),
    ),
)
_AE_PAPER = "Jiang et al., ICLR 2023"


def _make_gsam(base: Optimizer, hp: Mapping[str, Any]) -> Optimizer:
    from looksam.optim.gsam import GSAM

    return GSAM(base, rho=hp["rho"], alpha=hp["alpha"])


def _make_latesam(base: Optimizer, hp: Mapping[str, Any], *, total_steps: int) -> Optimizer:
    from looksam.optim.late_phase import LatePhaseSAM

    return LatePhaseSAM(
        base, rho=hp["rho"], start_fraction=hp["start_fraction"], total_steps=total_steps
    )


def _late_phase_passes(hp: Mapping[str, Any]) -> tuple[float, float]:
    """1 pass before the switch, 2 after: about 2 − f over the run."""
    cost = 2.0 - hp["start_fraction"]
    return cost, cost


def _make_esam(base: Optimizer, hp: Mapping[str, Any]) -> Optimizer:
    from looksam.optim.esam import ESAM

    return ESAM(base, rho=hp["rho"], beta=hp["beta"], gamma=hp["gamma"])


def _esam_passes(hp: Mapping[str, Any]) -> tuple[float, float]:
    """g on the batch, a forward-only pass at w + ε, g_s on a share γ of the batch."""
    cost = 1.0 + FORWARD_ONLY_PASS + hp["gamma"]
    return cost, cost


def _make_ksam(base: Optimizer, hp: Mapping[str, Any]) -> Optimizer:
    from looksam.optim.ksam import KSAM

    return KSAM(base, rho=hp["rho"], fraction=hp["fraction"])


def _ksam_passes(hp: Mapping[str, Any]) -> tuple[float, float]:
    """A forward-only ranking pass, then g and g_s on a share κ of the batch."""
    cost = FORWARD_ONLY_PASS + 2.0 * hp["fraction"]
    return cost, cost


def _make_saf(base: Optimizer, hp: Mapping[str, Any]) -> Optimizer:
    from looksam.optim.saf import SAF

    return SAF(base, **{k: hp[k] for k in ("weight", "temperature", "lag", "start_epoch")})


def _make_mesa(base: Optimizer, hp: Mapping[str, Any]) -> Optimizer:
    from looksam.optim.saf import MESA

    return MESA(base, **{k: hp[k] for k in ("weight", "temperature", "decay", "start_epoch")})


def _fraction(name: str, default: float, help: str, search: tuple[float, float]) -> HyperParameter:
    return HyperParameter(name, default, 0.01, 1.0, help=help, search=search, sensitivity=True)


#: SAF's and MESA's trajectory loss (Du et al., NeurIPS 2022; the authors' scripts' defaults).
_TRAJECTORY = (
    HyperParameter(
        "weight",
        0.3,
        0.0,
        None,
        help="weight λ of the trajectory (KL) loss",
        search=(0.05, 1.0),
        log=True,
        sensitivity=True,
    ),
    HyperParameter("temperature", 5.0, 0.1, None, help="temperature τ of the softened outputs"),
    HyperParameter(
        "start_epoch", 5, 0, None, kind="int", help="first epoch (from 0) with the loss term"
    ),
)
_SAF_PAPER = "Du et al., NeurIPS 2022"


def _make_grst(base: Optimizer, hp: Mapping[str, Any], *, total_steps: int) -> Optimizer:
    from looksam.optim.grst import GRST

    # The linear schedule; p_start == p_end (the defaults) is the constant one.
    return GRST(
        base, rho=hp["rho"], p_start=hp["p_start"], p_end=hp["p_end"], total_steps=total_steps
    )


def _grst_passes(hp: Mapping[str, Any]) -> tuple[float, float]:
    """1 + p(t) passes in expectation; over a linear schedule 1 + (p_start + p_end)/2."""
    cost = 1.0 + (hp["p_start"] + hp["p_end"]) / 2.0
    return cost, cost


def _make_rwp(base: Optimizer, hp: Mapping[str, Any]) -> Optimizer:
    from looksam.optim.rwp import RWP

    return RWP(base, gamma=hp["gamma"])


def _probability(name: str, help: str) -> HyperParameter:
    # p = 0.5 throughout: the paper's headline cost, 1.5 passes per step.
    return HyperParameter(name, 0.5, 0.0, 1.0, help=help, search=(0.1, 0.9), sensitivity=True)


_LOOKSAM_PAPER = "Liu et al., CVPR 2022"

_BUILT_IN: tuple[OptimizerInfo, ...] = (
    OptimizerInfo(
        name="sgd",
        display_name="SGD",
        colour="#7F7F7F",
        summary="SGD with (Nesterov) momentum",
        paper="Polyak 1964; Sutskever et al., ICML 2013",
        factory=_make_sgd,
        hyperparameters=(
            _hp_lr(0.05, (0.005, 0.5)),
            HyperParameter("momentum", 0.9, 0.0, 1.0, help="heavy-ball momentum"),
            HyperParameter("weight_decay", 5e-4, 0.0, None, help="L2 penalty"),
            HyperParameter("nesterov", False, kind="bool", help="Nesterov momentum"),
        ),
        uses_workload_lr=True,
    ),
    OptimizerInfo(
        name="adamw",
        display_name="AdamW",
        colour="#000000",
        summary="AdamW (decoupled weight decay)",
        paper="Loshchilov & Hutter, ICLR 2019",
        factory=_make_adamw,
        hyperparameters=_adam_like(1e-3, 0.05),
    ),
    OptimizerInfo(
        name="lamb",
        display_name="LAMB",
        colour="#56B4E9",
        summary="LAMB, layer-wise adaptive (timm)",
        paper="You et al., ICLR 2020",
        factory=_make_lamb,
        hyperparameters=_adam_like(2e-3, 0.02),
    ),
    OptimizerInfo(
        name="sam",
        display_name="SAM",
        colour="#D55E00",
        summary="SAM: g_s = ∇L(w + ρg/‖g‖) every step (adaptive=ASAM)",
        paper="Foret et al., ICLR 2021; ASAM: Kwon et al., ICML 2021",
        factory=_make_sam,
        hyperparameters=(
            _hp_rho(),
            HyperParameter("adaptive", False, kind="bool", help="ASAM: T = |w|"),
        ),
        passes=fixed_passes(2.0),
        cost_formula="2",
        wraps_base=True,
        cuda_graphs=False,
        sam_role="full",
        per_rank_perturbation=True,
    ),
    OptimizerInfo(
        name="samk",
        display_name="SAM-k",
        colour="#E69F00",
        summary="SAM every k steps, plain g in between (naive baseline)",
        paper=_LOOKSAM_PAPER + ", Fig. 1 baseline",
        factory=_make_samk,
        hyperparameters=(_hp_rho(), _hp_k()),
        passes=every_k_passes,
        cost_formula="1 + 1/k",
        wraps_base=True,
        cuda_graphs=False,
        sam_role="approximation",
        per_rank_perturbation=True,
    ),
    OptimizerInfo(
        name="looksam",
        display_name="LookSAM",
        colour="#0072B2",
        summary="LookSAM: g_s every k steps, reuses g_v in between",
        paper=_LOOKSAM_PAPER,
        factory=_make_looksam,
        hyperparameters=(_hp_rho(), _hp_k(), _hp_alpha()),
        passes=every_k_passes,
        cost_formula="1 + 1/k",
        wraps_base=True,
        cuda_graphs=False,
        sam_role="approximation",
        per_rank_perturbation=True,
    ),
    OptimizerInfo(
        name="layerlooksam",
        display_name="Look-LayerSAM",
        colour="#009E73",
        summary="Look-LayerSAM: LookSAM with layer-wise ρ‖w_l‖/‖g_l‖",
        paper=_LOOKSAM_PAPER + ", Sec. 3.3",
        factory=_make_layerlooksam,
        hyperparameters=(_hp_rho(), _hp_k(), _hp_alpha()),
        passes=every_k_passes,
        cost_formula="1 + 1/k",
        wraps_base=True,
        cuda_graphs=False,
        sam_role="approximation",
        per_rank_perturbation=True,
    ),
    OptimizerInfo(
        name="msam",
        display_name="MSAM",
        colour="#CC79A7",
        summary="Momentum-SAM: g at w − ρv/‖v‖ (v: the base's momentum), one pass per step",
        paper="Becker et al., arXiv:2401.12033, 2024",
        factory=_make_msam,
        # ρ = 3 is the official code's setting for every experiment in its README; the paper
        # searches about 0.3-3 (more for ViTs), an order of magnitude above SAM's.
        hyperparameters=(_hp_rho(3.0, (0.1, 3.0)),),
        wraps_base=True,
        cuda_graphs=False,
        bases=("sgd", "adamw"),  # it reads SGD's momentum buffer or AdamW's first moment
        sam_role="approximation",
    ),
    OptimizerInfo(
        name="aesam",
        display_name="AE-SAM",
        colour="#882255",
        summary="AE-SAM: SAM only on steps whose ‖g‖² is high against its running statistics",
        paper=_AE_PAPER,
        factory=_make_aesam,
        hyperparameters=(_hp_rho(), *_AE_POLICY),
        passes=fixed_range(1.0, 2.0),
        cost_formula="1–2",
        wraps_base=True,
        cuda_graphs=False,
        sam_role="approximation",
        needs_total_steps=True,
        fixed_schedule=False,
        grad_scaler=False,  # its statistics would see the loss scale, which moves
    ),
    OptimizerInfo(
        name="aelooksam",
        display_name="AE-LookSAM",
        colour="#44AA99",
        summary="AE-LookSAM: AE-SAM's rule, LookSAM's reused g_v on the other steps",
        paper=_AE_PAPER,
        factory=_make_aelooksam,
        hyperparameters=(_hp_rho(), _hp_alpha(), *_AE_POLICY),
        passes=fixed_range(1.0, 2.0),
        cost_formula="1–2",
        wraps_base=True,
        cuda_graphs=False,
        sam_role="approximation",
        needs_total_steps=True,
        fixed_schedule=False,
        grad_scaler=False,
    ),
    OptimizerInfo(
        name="gsam",
        display_name="GSAM",
        colour="#DDCC77",
        summary="GSAM: SAM's g_s minus α times g's part orthogonal to it (surrogate gap)",
        paper="Zhuang et al., ICLR 2022",
        factory=_make_gsam,
        hyperparameters=(
            _hp_rho(),
            # α = 0.2: the authors' CIFAR-10 example; their ViT configs use up to 0.6.
            HyperParameter(
                "alpha",
                0.2,
                0.0,
                None,
                help="weight α of the ascent step orthogonal to g_s",
                search=(0.01, 0.6),
                log=True,
                sensitivity=True,
            ),
        ),
        passes=fixed_passes(2.0),
        cost_formula="2",
        wraps_base=True,
        cuda_graphs=False,
        sam_role="none",  # it costs what SAM costs: a refinement, not a cheap stand-in
    ),
    OptimizerInfo(
        name="latesam",
        display_name="Late-phase SAM",
        colour="#332288",
        summary="The base optimizer until a fraction f of the run, SAM after",
        paper="Zhou et al., ICLR 2025",
        factory=_make_latesam,
        hyperparameters=(
            _hp_rho(),
            # f = 0.875: the paper's Fig. 1a switches to SAM for the last 25 of 200 epochs.
            HyperParameter(
                "start_fraction",
                0.875,
                0.0,
                1.0,
                help="share of the run before SAM starts (0: SAM throughout)",
                search=(0.5, 0.95),
                sensitivity=True,
            ),
        ),
        passes=_late_phase_passes,
        cost_formula="2 − f",
        wraps_base=True,
        cuda_graphs=False,
        sam_role="approximation",
        per_rank_perturbation=True,
        fixed_schedule=False,
        needs_total_steps=True,
    ),
    OptimizerInfo(
        name="esam",
        display_name="ESAM",
        colour="#AA4499",
        summary="ESAM: ε on a random share β of the weights, g_s on the sharpest γ of the batch",
        paper="Du et al., ICLR 2022",
        factory=_make_esam,
        hyperparameters=(
            _hp_rho(),
            _fraction("beta", 0.6, "share β of the weights SWP perturbs", (0.3, 1.0)),
            _fraction("gamma", 0.5, "share γ of the batch in the second pass", (0.2, 1.0)),
        ),
        passes=_esam_passes,
        cost_formula="1 + ⅓ + γ",
        wraps_base=True,
        cuda_graphs=False,
        sam_role="approximation",
        needs_per_sample_loss=True,
    ),
    OptimizerInfo(
        name="ksam",
        display_name="K-SAM",
        colour="#117733",
        summary="K-SAM: both SAM passes on the share κ of the batch with the highest loss",
        paper="Ni et al., arXiv:2210.12864, 2022",
        factory=_make_ksam,
        hyperparameters=(
            _hp_rho(),
            _fraction("fraction", 0.5, "share κ of the batch both passes run on", (0.1, 1.0)),
        ),
        passes=_ksam_passes,
        cost_formula="⅓ + 2κ",
        wraps_base=True,
        cuda_graphs=False,
        sam_role="approximation",
        needs_per_sample_loss=True,
    ),
    OptimizerInfo(
        name="saf",
        display_name="SAF",
        colour="#999933",
        summary="SAF: the base step plus a KL loss to each example's outputs Ẽ epochs ago",
        paper=_SAF_PAPER,
        factory=_make_saf,
        hyperparameters=(
            *_TRAJECTORY,
            HyperParameter(
                "lag",
                3,
                1,
                None,
                kind="int",
                help="epochs Ẽ back to the reference outputs",
                search=(1, 5),
            ),
        ),
        cost_formula="1",
        wraps_base=True,
        sam_role="approximation",
        fixed_schedule=False,  # the term starts at start_epoch: timing windows switch it on
        adds_loss_term=True,
        needs_sample_index=True,
        memory_formula="(Ẽ + 1)·C logits + (Ẽ + 1) epoch stamps per training example",
    ),
    OptimizerInfo(
        name="mesa",
        display_name="MESA",
        colour="#88CCEE",
        summary="MESA: the base step plus a KL loss to an EMA model's outputs",
        paper=_SAF_PAPER,
        factory=_make_mesa,
        hyperparameters=(
            *_TRAJECTORY,
            HyperParameter(
                "decay",
                0.999,
                0.0,
                1.0,
                high_open=True,
                help="EMA decay δ per step",
                search=(0.99, 0.9999),
            ),
        ),
        passes=fixed_passes(1.0 + FORWARD_ONLY_PASS),
        cost_formula="1 + ⅓",
        wraps_base=True,
        sam_role="approximation",
        fixed_schedule=False,
        adds_loss_term=True,
        memory_formula="one copy of the model's parameters and buffers",
    ),
    OptimizerInfo(
        name="grst",
        display_name="G-RST",
        colour="#661100",
        summary="RST's coin under a p(t) schedule (G-RST's own formula not implemented)",
        paper="Zhao, Zhang & Hu, arXiv:2203.09962, 2022",
        factory=_make_grst,
        hyperparameters=(
            _hp_rho(),
            _probability("p_start", "probability p of a SAM step at the first step"),
            _probability("p_end", "probability p of a SAM step at the last step (linear)"),
        ),
        passes=_grst_passes,
        cost_formula="1 + (p₀ + p₁)/2",
        wraps_base=True,
        cuda_graphs=False,
        sam_role="approximation",
        per_rank_perturbation=True,  # the coin is known before the first pass, equal on all ranks
        needs_total_steps=True,
        fixed_schedule=False,  # a coin: timing windows replay the expected share
    ),
    OptimizerInfo(
        name="rwp",
        display_name="RWP",
        colour="#6699CC",
        summary="RWP: the gradient at w + ε, ε Gaussian with std γ·‖filter‖; one pass",
        paper="Li et al., arXiv:2211.11489, 2022 (single-device form)",
        factory=_make_rwp,
        hyperparameters=(
            # γ = 0.01: the official code's default and CIFAR recipe (ImageNet: 0.005).
            HyperParameter(
                "gamma",
                0.01,
                0.0,
                None,
                help="noise std γ relative to each filter's norm",
                search=(0.002, 0.05),
                log=True,
                sensitivity=True,
            ),
        ),
        cost_formula="1",
        wraps_base=True,
        cuda_graphs=False,
        sam_role="approximation",
        memory_formula="one copy of the parameters (the noise buffer)",
    ),
)

for _info in _BUILT_IN:
    register_optimizer(_info)
