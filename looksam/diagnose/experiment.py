"""Gradient drift of g, g_s and g_v: LookSAM's Figure 2 reproduced on any workload.

LookSAM (Liu et al., "Towards Efficient and Scalable Sharpness-Aware Minimization", CVPR 2022)
reuses g_v, the part of SAM's gradient g_s orthogonal to the plain gradient g, for k steps because
its Figure 2 shows g_v changing much more slowly than g or g_s. Whether that holds decides whether
LookSAM's reuse is sound on *your* model, so this module measures it: it trains with plain SAM
(g_s every step, so all three vectors exist at every step) and records how far each one moved
between step t and step t + k.

It prints nothing and writes nothing: :func:`run_diagnosis` returns a :class:`DiagnosisResult`
that the CLI, the HTML page and notebooks render.
"""

from __future__ import annotations

import json
import math
import numbers
import statistics
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch
from torch import Tensor

from looksam._json import json_safe
from looksam.optim import full_sam
from looksam.train.runner import (
    Environment,
    RunConfig,
    TrainingSession,
    environment,
    validate_config,
)

T = TypeVar("T")

#: The three gradients compared: SAM's plain gradient, its perturbed one, and LookSAM's g_v.
VECTORS = ("g", "g_s", "g_v")
#: ‖x_t − x_{t+k}‖, that over ‖x_t‖, and cos(x_t, x_{t+k}).
METRICS = ("absolute", "relative", "cosine")
#: The drift the verdict compares (see :class:`LagSummary`).
VERDICT_METRIC = "relative"
#: Ratios above this still count as "slower" for the verdict, but the sentence calls them slight:
#: the paper claims g_v changes *much* more slowly, and a few per cent is not that.
CLEARLY_SLOWER = 0.9
DEFAULT_KS = (1, 2, 5, 10)
#: About 21 epochs of digits-noisy at its batch of 64: the drift settles; seconds on a CPU.
DEFAULT_STEPS = 400
#: Full SAM's registry default, the ρ ``looksam-bench run -o sam`` trains with.
DEFAULT_RHO = float(full_sam().defaults()["rho"])

DiagnoseProgress = Callable[[int, int, float], None]  # (steps done, total steps, loss)


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class DiagnoseConfig:
    """One drift measurement: the workload, the lags k and how SAM trains meanwhile.

    Training uses the ``run`` command's recipe for ``-o sam`` (SGD base with momentum, the
    workload's learning rate, linear warm-up then cosine decay over ``steps``). Field values are
    checked on construction (ValueError naming the bad value); the workload, device and data are
    checked by :func:`validate_diagnose_config`.
    """

    workload: str
    ks: tuple[int, ...] = DEFAULT_KS
    rho: float = DEFAULT_RHO
    steps: int = DEFAULT_STEPS
    seed: int = 0
    device: str = "auto"
    lr: float | None = None
    batch_size: int | None = None
    data_dir: str | None = None

    def __post_init__(self) -> None:
        ks = tuple(self.ks) if isinstance(self.ks, Iterable) else (self.ks,)
        if not ks:
            raise ValueError("give at least one k (a lag in steps, e.g. 1, 2, 5, 10)")
        for k in ks:
            if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
                raise ValueError(f"k values must be integers >= 1, got k={k!r}")
        repeated = sorted({int(k) for k in ks if ks.count(k) > 1})
        if repeated:
            raise ValueError(f"k values must be unique, got k={repeated[0]} more than once")
        object.__setattr__(self, "ks", tuple(sorted(int(k) for k in ks)))
        if isinstance(self.steps, bool) or not isinstance(self.steps, numbers.Integral):
            raise ValueError(f"steps must be an integer, got {self.steps!r}")
        need = max(self.ks) + 1
        if self.steps < need:
            raise ValueError(
                f"steps must be >= max(k) + 1 = {need} so every k has a pair of steps to "
                f"compare, got steps={self.steps}"
            )
        rho = self.rho
        if isinstance(rho, bool) or not isinstance(rho, numbers.Real) or not math.isfinite(rho):
            raise ValueError(f"rho must be a finite number > 0, got rho={rho!r}")
        if rho <= 0:
            raise ValueError(f"rho must be > 0 (with rho=0, g_s = g and g_v = 0), got rho={rho}")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got lr={self.lr}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got batch_size={self.batch_size}")

    def run_config(self) -> RunConfig:
        """The runner configuration SAM trains under (so the session is ``run``'s session)."""
        return RunConfig(
            workload=self.workload,
            optimizer=full_sam().name,
            hyperparameters={"rho": float(self.rho)},
            lr=self.lr,
            batch_size=self.batch_size,
            # Every epoch has at least one step, so `steps` epochs always cover `steps` steps;
            # max_steps then makes the cosine schedule span exactly the measured run.
            epochs=self.steps,
            max_steps=self.steps,
            seed=self.seed,
            device=self.device,
            data_dir=self.data_dir,
        )


def validate_diagnose_config(config: DiagnoseConfig) -> None:
    """Raise ValueError / WorkloadDataError for a bad workload, device or data before any work."""
    validate_config(config.run_config())


# --------------------------------------------------------------------------- the maths


def orthogonal_component(g: Tensor, g_s: Tensor) -> Tensor:
    """g_v = g_s − (⟨g, g_s⟩/‖g‖²)·g, LookSAM's reused direction; g_s itself when g = 0.

    Both arguments are flat vectors of one dtype. With g = 0 there is no direction to project out,
    the same convention the LookSAM optimizer uses.
    """
    g_sq = float(torch.dot(g, g))
    if g_sq == 0.0:
        return g_s.clone()
    return g_s - (float(torch.dot(g, g_s)) / g_sq) * g


@dataclass(frozen=True)
class Drift:
    """How far one vector moved between two steps.

    ``relative`` and ``cosine`` are NaN where undefined (a zero vector has no size to compare
    against or no direction); NaN is written as null in JSON and left out of medians.
    """

    absolute: float  # ‖x_t − x_{t+k}‖
    relative: float  # ‖x_t − x_{t+k}‖ / ‖x_t‖
    cosine: float  # cos(x_t, x_{t+k})

    def metric(self, name: str) -> float:
        """The value of one of :data:`METRICS`."""
        return float(getattr(self, name))


@dataclass(frozen=True)
class _Snapshot:
    """A flat vector with its norm, computed once per step instead of once per lag."""

    vector: Tensor
    norm: float


def _snapshot(vector: Tensor) -> _Snapshot:
    return _Snapshot(vector, float(torch.linalg.vector_norm(vector)))


def _drift_between(before: _Snapshot, after: _Snapshot) -> Drift:
    absolute = float(torch.linalg.vector_norm(before.vector - after.vector))
    relative = absolute / before.norm if before.norm > 0.0 else math.nan
    if before.norm > 0.0 and after.norm > 0.0:
        cosine = float(torch.dot(before.vector, after.vector)) / (before.norm * after.norm)
        cosine = min(1.0, max(-1.0, cosine))  # rounding can step just outside [-1, 1]
    else:
        cosine = math.nan
    return Drift(absolute, relative, cosine)


def drift(before: Tensor, after: Tensor) -> Drift:
    """Absolute drift, drift relative to ``before``'s norm, and cosine of two flat vectors."""
    return _drift_between(_snapshot(before), _snapshot(after))


class RingBuffer(Generic[T]):
    """The last ``capacity`` items pushed; older ones are dropped, so memory stays bounded."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._items: deque[T] = deque(maxlen=capacity)

    @property
    def capacity(self) -> int:
        """The most items ever held."""
        return self._items.maxlen or 0

    def push(self, item: T) -> None:
        """Add the newest item (dropping the oldest when full)."""
        self._items.append(item)

    def ago(self, lag: int) -> T:
        """The item pushed ``lag`` pushes before the newest one (``ago(0)`` is the newest)."""
        if not 0 <= lag < len(self._items):
            raise IndexError(f"lag {lag} is not held (holding {len(self._items)} items)")
        return self._items[-1 - lag]

    def __len__(self) -> int:
        return len(self._items)


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class DriftSeries:
    """One metric of one vector at one lag, over training: ``values[i]`` compares the gradient
    of step ``steps[i] - k`` with that of step ``steps[i]`` (steps counted from 0)."""

    k: int
    vector: str  # one of VECTORS
    metric: str  # one of METRICS
    steps: tuple[int, ...]
    values: tuple[float, ...]

    def median(self) -> float:
        """Median over the run, ignoring undefined (NaN) points; NaN if none is defined."""
        return _median(self.values)


@dataclass(frozen=True)
class LagSummary:
    """Medians at one lag k, and how g_v's drift compares with that of g and g_s.

    The verdict uses *relative* drift: g_v is one component of g_s, so its norm is smaller and its
    absolute drift is smaller for that reason alone. Dividing by the vector's own norm asks the
    question LookSAM's reuse depends on: did the direction and size change *for its size*. The
    absolute ratios are kept for comparison with the paper's plot.
    """

    k: int
    median: dict[str, dict[str, float]]  # metric -> vector -> median over the run
    gv_over_g: float  # median relative drift of g_v / that of g
    gv_over_gs: float  # median relative drift of g_v / that of g_s
    abs_gv_over_g: float  # the same with absolute drift
    abs_gv_over_gs: float

    @property
    def gv_slower(self) -> bool:
        """g_v drifted less, relative to its norm, than both g and g_s at this k."""
        return self.gv_over_g < 1.0 and self.gv_over_gs < 1.0  # NaN compares False


@dataclass(frozen=True)
class DiagnosisResult:
    """Everything one diagnosis measured; JSON-serialisable (NaN becomes null)."""

    config: DiagnoseConfig
    status: str  # "ok" | "diverged"
    message: str
    steps: int  # steps completed
    epochs: float  # steps / steps per epoch: how much data the run saw
    lr: float  # the peak learning rate used (the workload's unless given)
    batch_size: int
    seconds: float  # training and measuring; setup and the final evaluation excluded
    train_loss: tuple[float, ...]  # first-pass loss of every completed step
    test_accuracy: float | None  # at the end; None for speed-only workloads or a diverged run
    series: tuple[DriftSeries, ...]
    summaries: tuple[LagSummary, ...]  # one per k, in config.ks order
    environment: Environment

    @property
    def verdict(self) -> bool:
        """Whether g_v drifts slower than both g and g_s at every k (relative drift)."""
        return bool(self.summaries) and all(s.gv_slower for s in self.summaries)

    @property
    def clearly_slower(self) -> bool:
        """The verdict holds with every ratio at most :data:`CLEARLY_SLOWER`, not by a hair."""
        return self.verdict and all(
            max(s.gv_over_g, s.gv_over_gs) <= CLEARLY_SLOWER for s in self.summaries
        )

    def get_series(self, k: int, vector: str, metric: str) -> DriftSeries:
        """The series of one (k, vector, metric); KeyError if it was not measured."""
        for s in self.series:
            if (s.k, s.vector, s.metric) == (k, vector, metric):
                return s
        raise KeyError(f"no series for k={k}, vector={vector!r}, metric={metric!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict: tuples become lists, NaN and ±inf become None."""
        data = json_safe(asdict(self))
        data["verdict"] = self.verdict
        data["clearly_slower"] = self.clearly_slower
        return data  # type: ignore[no-any-return]

    def write_json(self, path: Path) -> None:
        """Write the result as indented, strict JSON."""
        path.write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DiagnosisResult:
        """Inverse of :meth:`to_dict` (null measurements come back as NaN)."""
        fields = {k: v for k, v in data.items() if k not in ("verdict", "clearly_slower")}
        config = dict(fields["config"])
        config["ks"] = tuple(config["ks"])
        fields["config"] = DiagnoseConfig(**config)
        fields["train_loss"] = tuple(_nan_if_none(v) for v in fields["train_loss"])
        fields["series"] = tuple(
            DriftSeries(
                k=s["k"],
                vector=s["vector"],
                metric=s["metric"],
                steps=tuple(s["steps"]),
                values=tuple(_nan_if_none(v) for v in s["values"]),
            )
            for s in fields["series"]
        )
        fields["summaries"] = tuple(
            LagSummary(
                k=s["k"],
                median={
                    m: {v: _nan_if_none(x) for v, x in by_vector.items()}
                    for m, by_vector in s["median"].items()
                },
                gv_over_g=_nan_if_none(s["gv_over_g"]),
                gv_over_gs=_nan_if_none(s["gv_over_gs"]),
                abs_gv_over_g=_nan_if_none(s["abs_gv_over_g"]),
                abs_gv_over_gs=_nan_if_none(s["abs_gv_over_gs"]),
            )
            for s in fields["summaries"]
        )
        fields["environment"] = Environment(**fields["environment"])
        return cls(**fields)


def _nan_if_none(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _median(values: Iterable[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return statistics.median(finite) if finite else math.nan


def _ratio(a: float, b: float) -> float:
    return a / b if math.isfinite(a) and math.isfinite(b) and b > 0.0 else math.nan


def summarise(series: Sequence[DriftSeries], ks: Sequence[int]) -> tuple[LagSummary, ...]:
    """Per-k medians of every (vector, metric) series and g_v's drift ratios."""
    out = []
    for k in ks:
        median = {
            metric: {
                vector: _median(
                    v
                    for s in series
                    if (s.k, s.vector, s.metric) == (k, vector, metric)
                    for v in s.values
                )
                for vector in VECTORS
            }
            for metric in METRICS
        }
        rel, ab = median["relative"], median["absolute"]
        out.append(
            LagSummary(
                k=k,
                median=median,
                gv_over_g=_ratio(rel["g_v"], rel["g"]),
                gv_over_gs=_ratio(rel["g_v"], rel["g_s"]),
                abs_gv_over_g=_ratio(ab["g_v"], ab["g"]),
                abs_gv_over_gs=_ratio(ab["g_v"], ab["g_s"]),
            )
        )
    return tuple(out)


def verdict_sentence(result: DiagnosisResult) -> str:
    """One plain sentence: does g_v drift slower than g and g_s, as the LookSAM paper says?"""
    prefix = (
        f"Training diverged after {result.steps} steps; from the steps before that: "
        if result.status != "ok"
        else ""
    )
    sums = [s for s in result.summaries if math.isfinite(s.gv_over_g + s.gv_over_gs)]
    if not sums:
        return prefix + "not enough steps to compare the drift of g_v with that of g and g_s."

    def span(values: list[float]) -> str:
        lo, hi = min(values), max(values)
        return f"{lo:.2f}" if f"{lo:.2f}" == f"{hi:.2f}" else f"{lo:.2f}–{hi:.2f}"

    ratios = (
        f"(median relative drift ratio g_v/g {span([s.gv_over_g for s in sums])}, "
        f"g_v/g_s {span([s.gv_over_gs for s in sums])} over k = "
        f"{', '.join(str(s.k) for s in sums)})"
    )
    measured = {s.k for s in sums}
    missing = [str(s.k) for s in result.summaries if s.k not in measured]
    if missing:
        return (
            f"{prefix}no verdict: k = {', '.join(missing)} had no pair of steps to compare; "
            f"the measured lags give {ratios}."
        )
    if result.verdict and not result.clearly_slower:
        return (
            f"{prefix}g_v drifts slower than both g and g_s at every k, but only slightly "
            f"{ratios}: not the much slower drift the LookSAM paper reports."
        )
    if result.verdict:
        return (
            f"{prefix}g_v drifts clearly slower than both g and g_s at every k {ratios}, as the "
            "LookSAM paper reports."
        )
    failing = [str(s.k) for s in result.summaries if not s.gv_slower]
    return (
        f"{prefix}g_v does not drift slower than both g and g_s at every k: it fails at "
        f"k = {', '.join(failing)} {ratios}, so the LookSAM paper's premise does not hold here."
    )


# --------------------------------------------------------------------------- the run


def _flat_gradient(params: Sequence[Tensor]) -> Tensor:
    """All gradients as one vector (zeros for a parameter without one, so positions line up)."""
    flat = torch.cat(
        [
            (p.grad.detach() if p.grad is not None else torch.zeros_like(p)).reshape(-1)
            for p in params
        ]
    )
    return flat.float() if flat.dtype in (torch.float16, torch.bfloat16) else flat


def run_diagnosis(
    config: DiagnoseConfig, progress: DiagnoseProgress | None = None
) -> DiagnosisResult:
    """Train with SAM and measure how fast g, g_s and g_v drift, at every lag k in the config.

    Each step is the runner's own ``train_step`` with SAM (two passes every step); after each
    backward pass a flat copy of the gradient is kept (g, then g_s). Memory is
    bounded: per vector a ring buffer holds only the last max(k) + 1 flat copies, i.e.
    3·(max(k) + 1) gradient-sized vectors on the training device, never the whole history.

    Args:
        config: what to measure; the workload, device and data are validated first (ValueError or
            WorkloadDataError for bad input, before any training).
        progress: called as ``progress(steps_done, total_steps, loss)`` after every step.

    A non-finite loss or gradient stops the run with status ``"diverged"``; what was measured up
    to then is kept.
    """
    session = TrainingSession(config.run_config())
    workload = session.workload
    params = [p for p in session.model.parameters() if p.requires_grad]
    history: dict[str, RingBuffer[_Snapshot]] = {
        name: RingBuffer(max(config.ks) + 1) for name in VECTORS
    }
    steps_at: dict[int, list[int]] = {k: [] for k in config.ks}
    values: dict[tuple[int, str, str], list[float]] = {
        (k, v, m): [] for k in config.ks for v in VECTORS for m in METRICS
    }
    losses: list[float] = []
    captured: list[Tensor] = []

    def capture() -> None:  # after each backward pass: g, then g_s (SAM looks every step)
        captured.append(_flat_gradient(params))

    status, message = "ok", ""
    batches = session.batches()
    start = time.perf_counter()
    for step in range(config.steps):
        x, y = next(batches)
        captured.clear()
        loss = float(session.train_step(x, y, after_backward=capture))
        if not math.isfinite(loss):
            status, message = "diverged", f"non-finite training loss at step {step}"
            break
        g, g_s = captured
        snaps = {"g": _snapshot(g), "g_s": _snapshot(g_s)}
        snaps["g_v"] = _snapshot(orthogonal_component(g, g_s))
        if not all(math.isfinite(s.norm) for s in snaps.values()):
            status, message = "diverged", f"non-finite gradient at step {step}"
            break
        losses.append(loss)
        for name in VECTORS:
            history[name].push(snaps[name])
        for k in config.ks:
            if len(history["g"]) <= k:
                continue
            steps_at[k].append(step)
            for name in VECTORS:
                d = _drift_between(history[name].ago(k), history[name].ago(0))
                for metric in METRICS:
                    values[k, name, metric].append(d.metric(metric))
        if progress is not None:
            progress(step + 1, config.steps, loss)
    seconds = time.perf_counter() - start
    series = tuple(
        DriftSeries(k, v, m, tuple(steps_at[k]), tuple(values[k, v, m]))
        for k in config.ks
        for v in VECTORS
        for m in METRICS
    )
    accuracy = session.evaluate() if workload.measures_accuracy and status == "ok" else None
    return DiagnosisResult(
        config=config,
        status=status,
        message=message,
        steps=len(losses),
        epochs=len(losses) / session.steps_per_epoch,
        lr=float(session.base_optimizer.defaults["lr"]),
        batch_size=session.batch_size,
        seconds=seconds,
        train_loss=tuple(losses),
        test_accuracy=accuracy,
        series=series,
        summaries=summarise(series, config.ks),
        environment=environment(session.device),
    )


__all__ = [
    "DEFAULT_KS",
    "DEFAULT_RHO",
    "DEFAULT_STEPS",
    "METRICS",
    "VECTORS",
    "DiagnoseConfig",
    "DiagnoseProgress",
    "DiagnosisResult",
    "Drift",
    "DriftSeries",
    "LagSummary",
    "RingBuffer",
    "drift",
    "orthogonal_component",
    "run_diagnosis",
    "summarise",
    "validate_diagnose_config",
    "verdict_sentence",
]
