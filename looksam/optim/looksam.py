"""LookSAM (Liu et al., CVPR 2022): SAM's gradient every k steps, its slow part reused between."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor
from torch.optim import Optimizer

from looksam.optim._base import Bucket, SharpnessAwareOptimizer, _LookInFlight, check_alpha
from looksam.optim._foreach import (
    FlatLayout,
    Scalar,
    accumulation_dtype,
    add_scaled,
    add_scaled_,
    combine_norms,
    divide,
    finite_or,
    global_norm,
    norm_of,
    safe_ratio,
    scalars_on_host,
)

#: [‖g_v‖, α/‖g_v‖]: a 2-vector on the device (device scalars) or a pair of floats (host).
_Stats = Tensor | tuple[float, float]

#: ‖g_v‖ at or below this many ulps of ‖g_s‖ is rounding error of the projection, taken as 0.
_NOISE_FLOOR = 16.0


@dataclass
class _GvStore:
    """LookSAM's flat buffers for one (device, dtype) bucket of parameters: two rows of one tensor.

    Row 1 (``kept``) holds g from the first pass and is turned into the candidate g_v in place;
    row 0 (``gv``, whose views are the state's ``g_v``) then takes row 1, or keeps its own when
    the candidate came out non-finite. Choosing a row by a device index is one gather, where a
    ``torch.where`` with a 0-dim condition is several times slower on the CPU.
    """

    rows: Tensor
    kept_views: list[Tensor]

    @property
    def kept(self) -> Tensor:
        return self.rows[1]

    def keep_candidate_if_(self, finite: Tensor) -> None:
        """g_v ← the candidate where ``finite`` (a 0-dim bool tensor), else unchanged."""
        chosen = self.rows.index_select(0, finite.to(torch.long).view(1))
        self.rows[0].copy_(chosen.view(-1))

    def keep_candidate(self) -> None:
        """g_v ← the candidate (host scalars, which decided on the host that it is finite)."""
        self.rows[0].copy_(self.rows[1])


class LookSAM(SharpnessAwareOptimizer):
    r"""LookSAM: compute g_s every k steps and reuse its component orthogonal to g in between.

    Liu et al., "Towards Efficient and Scalable Sharpness-Aware Minimization", CVPR 2022,
    Algorithm 1. With global norms and the step counter t starting at 0:

    Look step (t mod k = 0), like SAM, and store the part of g_s orthogonal to g:

    .. math::
        g_s = ∇L(w + ρ\,g/‖g‖), \qquad
        g_v = g_s - \frac{⟨g, g_s⟩}{‖g‖^2}\, g, \qquad w ← \text{base\_step}(w, g_s)

    Other steps reuse the stored g_v, rescaled to the current gradient:

    .. math::
        w ← \text{base\_step}\Big(w,\; g + α\,\frac{‖g‖}{‖g_v‖}\, g_v\Big)

    ‖g_v‖ and α/‖g_v‖ are computed once per look step and cached. If ‖g‖ = 0 there is no
    perturbation and ⟨g, g_s⟩/‖g‖² is taken as 0; if ‖g_v‖ = 0 — or is no larger than the
    projection's rounding error, 16 ulps of ‖g_s‖, as when g_s ∥ g — the reuse term is 0. A look
    step whose passes overflowed (fp16) keeps the previous g_v. ``k=1`` is SAM; ``alpha=0`` is
    SAM-k. Cost: 1 + 1/k forward-backward passes per step.

    On an accelerator no step reads a value back to the host: the norms, α/‖g_v‖ and every guard
    above are 0-dim tensors on the device (``torch.where``, not ``if``); on the CPU they are
    Python floats (the ``scalars`` switch). A plain step is then two foreach calls, ‖g‖ and one
    scaled add; a look step adds to SAM's arithmetic a copy of g, ‖g_s‖, two scaled adds and four
    passes over the flat buffers (‖e‖, a scaling, ‖g_v‖, the copy into g_v). g and g_v live in
    two flat buffers per
    (device, dtype) bucket (2|θ| of memory, as g_v plus the g kept over a look step took before),
    so keeping or replacing g_v is one ``torch.where`` over the buffer; ``state[p]["g_v"]`` are
    views of it.

    Data-parallel training (``DistributedDataParallel``; see the module docstring of
    ``looksam.optim._base``): with the default *global* perturbation both passes are
    all-reduced, every rank computes the same g, g_s and g_v, and nothing else is needed. With a
    *per-rank* perturbation (m-sharpness) the first pass of a look step runs under
    ``no_sync()``, so g — and therefore g_v — is local to each rank while g_s is global. Pass
    ``sync_gv`` to average g_v across ranks right after it is formed (‖g_v‖ is then recomputed
    from the average), which keeps the replicas identical on the reuse steps. That costs one
    all-reduce of |θ| numbers per look step and saves the all-reduce of g the first pass skips.

    Args:
        base: the optimizer that applies the update.
        rho: neighbourhood radius ρ ≥ 0.
        k: interval between look steps, an integer ≥ 1.
        alpha: weight α ≥ 0 of the reused g_v (the paper uses 0.7).
        sync_gv: per-rank perturbation only: called with a list of tensors (one per (device,
            dtype) bucket: its g_v in one flat buffer, so one all-reduce each), it must replace
            them in place by their mean over the ranks (e.g. ``DistContext.average_`` in
            ``looksam.train.distributed``). Every rank calls it on every look step, also when
            its own gradient overflowed, so collectives stay matched.
        scalars: ``"auto"`` (floats on the CPU, device tensors elsewhere), ``"host"`` or
            ``"device"``: where norms and factors live (see ``SharpnessAwareOptimizer``).
    """

    def __init__(
        self,
        base: Optimizer,
        *,
        rho: float = 0.05,
        k: int = 5,
        alpha: float = 0.7,
        sync_gv: Callable[[list[Tensor]], None] | None = None,
        scalars: str = "auto",
    ) -> None:
        super().__init__(base, rho=rho, k=k, alpha=check_alpha(alpha), scalars=scalars)
        if sync_gv is not None and not callable(sync_gv):
            raise ValueError(
                "sync_gv must be None or a callable that averages a list of tensors in place "
                f"across ranks, got {type(sync_gv).__name__}"
            )
        #: Averages a freshly computed g_v across data-parallel ranks (per-rank perturbation).
        self.sync_gv = sync_gv
        #: ‖g_v‖ (0 when g_v is rounding noise) and α/‖g_v‖ (0 likewise), as the scalars switch
        #: keeps them; None until the first look step (or a checkpoint) provides them.
        self._gv_stats: _Stats | None = None
        self._reuse_scale: Scalar | None = None
        #: Flat buffers of the parameters seen at the last look step, and their identities.
        self._store: list[_GvStore] = []
        self._store_key: tuple[int, ...] = ()
        #: Plain steps: the stored g_v aligned with the current buckets, cached on their key.
        self._plain_key: tuple[tuple[int, ...], int] | None = None
        self._plain: list[tuple[list[int] | None, list[Tensor]]] = []
        self._gv_version = 0  # bumped whenever the state's g_v tensors are replaced

    @property
    def gv_norm(self) -> float:
        """‖g_v‖ of the stored g_v (0 before the first look step, or when g_v is rounding noise).

        Reading it copies the value to the host: for inspection, not inside a training step.
        """
        return 0.0 if self._gv_stats is None else float(self._gv_stats[0])

    # ------------------------------------------------------------------ look step
    def _store_for(self, buckets: list[Bucket]) -> list[_GvStore]:
        """Flat buffers for this look step's buckets: reused while the parameters stay the same.

        A new layout (the first look, a parameter that gained or lost its gradient) copies the
        stored g_v of the parameters it keeps, so a look step that overflows still falls back
        to it. This is the only per-parameter Python loop, and it runs only on a new layout.
        """
        key = self._bucket_key
        if key == self._store_key and len(self._store) == len(buckets):
            return self._store
        store = []
        for bucket in buckets:
            layout = FlatLayout.of(bucket.params)
            rows = layout.allocate(rows=2)
            for p, view in zip(bucket.params, layout.views(rows[0]), strict=True):
                previous = self.state[p].get("g_v")
                if isinstance(previous, Tensor) and previous.shape == view.shape:
                    view.copy_(previous)
                self.state[p]["g_v"] = view
            store.append(_GvStore(rows, layout.views(rows[1])))
        self._store, self._store_key = store, key
        self._gv_version += 1
        return store

    def _first_gradient_norm(self, buckets: list[Bucket]) -> Scalar:
        # g is needed after the second pass overwrites p.grad: copy it into the flat buffer where
        # the projection will form g_v, and take ‖g‖ there (one kernel per bucket).
        # On the host ‖g‖ is taken as every other host-path norm of g is (per tensor, combined in
        # double): an adaptive rule's decision then hands the step the very same value.
        on_device = not self._host
        norms = []
        for bucket, store in zip(buckets, self._store_for(buckets), strict=True):
            torch._foreach_copy_(store.kept_views, bucket.grads)
            if on_device:
                norms.append(norm_of(store.kept, False))
        return combine_norms(norms) if on_device else self._gradient_norm(buckets)

    def _perturbed_weights(self, buckets: list[Bucket], grad_norm: Scalar) -> list[list[Tensor]]:
        # w + ρ·g/‖g‖ from the copy of g just made, while it is still in cache; half-precision
        # parameters keep an fp32 copy, and w + ε must keep their dtype: those read p.grad.
        scale = safe_ratio(self.rho, grad_norm)
        return [
            add_scaled(
                b.params, s.kept_views if s.kept.dtype == b.params[0].dtype else b.grads, scale
            )
            for b, s in zip(buckets, self._store, strict=True)
        ]

    def _finish_look_(self, in_flight: _LookInFlight) -> None:
        store = self._store
        g_norm = in_flight.grad_norm
        host = not isinstance(g_norm, Tensor)
        pairs: list[tuple[list[Tensor], list[Tensor]]] = []  # (g in the flat buffer, g_s)
        partial = False
        for bucket, kept in zip(in_flight.buckets, store, strict=True):
            grads_s = [p.grad for p in bucket.params]
            if any(gs is None for gs in grads_s):  # rare: no gradient at w + ε for some params
                partial = True
                views = list(zip(kept.kept_views, grads_s, strict=True))
                # They drop out of g, of the norms and of g_v (their g_v becomes 0).
                torch._foreach_zero_([v for v, gs in views if gs is None])
                present = [(v, gs) for v, gs in views if gs is not None]
                pairs.append(([v for v, _ in present], [cast(Tensor, gs) for _, gs in present]))
            else:
                pairs.append((kept.kept_views, cast(list[Tensor], grads_s)))
        if partial:
            g_norm = combine_norms([norm_of(k.kept, host) for k in store])
        gs_norm = global_norm([gs for _, gs in pairs], host=host)
        self._project_out_(pairs, store, g_norm, gs_norm)
        if self.sync_gv is not None:
            for kept in store:  # one call per (device, dtype) bucket, on its whole flat g_v
                self.sync_gv([kept.kept])
        gv_norm = combine_norms([norm_of(k.kept, host) for k in store])
        # A pass that overflowed (fp16) makes g_v non-finite: keep the previous g_v and its
        # scale, GradScaler skips the step. In per-rank mode the average carries one rank's
        # overflow to every rank, so all of them keep theirs together. ‖g_v‖ no larger than the
        # projection's rounding error (g_s ∥ g) counts as 0.
        eps = max(torch.finfo(gs[0].dtype).eps for _, gs in pairs if gs)
        noise = gs_norm * (_NOISE_FLOOR * eps)
        if isinstance(gv_norm, Tensor):
            self._keep_on_device(store, gv_norm, noise)
        elif math.isfinite(gv_norm):
            signal = gv_norm > noise
            for kept in store:
                kept.keep_candidate()
            self._set_stats((gv_norm, self.alpha / gv_norm) if signal else (0.0, 0.0))

    def _keep_on_device(self, store: list[_GvStore], gv_norm: Tensor, noise: Scalar) -> None:
        """The candidate and its stats where ‖g_v‖ is finite, with no host read: few 0-dim
        operations, each a launch on a GPU."""
        finite = torch.isfinite(gv_norm)
        signal = gv_norm > noise  # NaN: False; ∞ is dropped below
        stats = torch.where(signal, torch.stack([gv_norm, self.alpha / gv_norm]), 0.0)
        for kept in store:
            kept.keep_candidate_if_(finite)
        previous = self._gv_stats
        if previous is not None:
            previous = torch.as_tensor(previous, dtype=stats.dtype, device=stats.device)
            stats = torch.where(finite, stats, previous)
        self._set_stats(stats)

    def _set_stats(self, stats: _Stats | None) -> None:
        """Store [‖g_v‖, α/‖g_v‖] (device 2-vector or floats) and the plain steps' scale."""
        self._gv_stats = stats
        self._reuse_scale = None if stats is None else stats[1]

    @staticmethod
    def _project_out_(
        pairs: list[tuple[list[Tensor], list[Tensor]]],
        store: list[_GvStore],
        g_norm: Scalar,
        gs_norm: Scalar,
    ) -> None:
        """Overwrite g (the first lists, views of the flat buffers) with g_s − (⟨g, g_s⟩/‖g‖²)·g.

        ⟨g, g_s⟩ comes from polarisation of the *norm-matched* pair: with c = ‖g‖/‖g_s‖,
        ‖g − c·g_s‖² = 2‖g‖²(1 − cos). Matching the norms keeps the identity exact when g and g_s
        come at different scales (GradScaler). Then g_v = (1 − cos)·g_s − β·(g − c·g_s) with
        β = cos/c = ⟨g, g_s⟩/‖g‖². The conventions need no branch: ‖g_s‖ = 0 (c = 0) gives β = 0
        and g_v = (1 − cos)·0 = 0 = g_s; ‖g‖ = 0 makes 1 − cos = 0/0, taken as 1, so g_v = g_s.
        Whole-buffer operations use only finite factors, so the alignment gaps stay zero. The
        scalars are floats or 0-dim tensors, as ``g_norm`` is (ten 0-dim operations on the device).
        """
        host = not isinstance(g_norm, Tensor)
        minus_c = -safe_ratio(g_norm, gs_norm)  # −c
        for g, gs in pairs:
            add_scaled_(g, gs, minus_c)  # e = g − c·g_s, in the flat buffer
        e_norm = combine_norms([norm_of(k.kept, host) for k in store])
        ratio = divide(e_norm, g_norm)
        one_minus_cos = finite_or(0.5 * (ratio * ratio), 1.0)  # 1 − cos = ½(‖e‖/‖g‖)²
        minus_beta = safe_ratio(1.0 - one_minus_cos, minus_c)  # −β = −cos/c
        for kept in store:
            kept.kept.mul_(minus_beta)  # one kernel over the buffer (gaps: 0·finite = 0)
        for e, gs in pairs:
            add_scaled_(e, gs, one_minus_cos)

    # ------------------------------------------------------------------ plain steps
    def _adjust_plain_gradient_(self) -> None:
        reuse_scale = self._reuse_scale
        if self.alpha == 0.0 or reuse_scale is None:
            return
        buckets = self._buckets()
        if self._host:
            if isinstance(reuse_scale, Tensor):  # the switch changed since the look step
                reuse_scale = reuse_scale.item()
            if reuse_scale == 0.0:  # g_v is rounding noise: g alone, as the device path adds 0
                return
        key = (self._bucket_key, self._gv_version)
        if key != self._plain_key:
            # Align the stored g_v with the current buckets once per look interval: the indices
            # of the parameters that have one (all of them, unless one gained a gradient since).
            plain: list[tuple[list[int] | None, list[Tensor]]] = []
            for bucket in buckets:
                stored = [self.state[p].get("g_v") for p in bucket.params]
                have = [i for i, v in enumerate(stored) if v is not None]
                subset = None if len(have) == len(stored) else have
                plain.append((subset, [cast(Tensor, stored[i]) for i in have]))
            self._plain, self._plain_key = plain, key
        coef = self._gradient_norm(buckets) * reuse_scale  # α‖g‖/‖g_v‖
        for bucket, (subset, gv) in zip(buckets, self._plain, strict=True):
            grads = bucket.grads if subset is None else [bucket.grads[i] for i in subset]
            add_scaled_(grads, gv, coef)

    # ------------------------------------------------------------------ checkpointing
    def _extra_state(self) -> dict[str, Any]:
        scale = 0.0 if self._reuse_scale is None else float(self._reuse_scale)
        return {"gv_norm": self.gv_norm, "reuse_scale": scale}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        gv_norm = float(extra.get("gv_norm", 0.0))
        self._store, self._store_key = [], ()
        self._gv_version += 1
        self._plain_key = None
        has_gv = any("g_v" in self.state[p] for g in self.param_groups for p in g["params"])
        if not has_gv:
            self._set_stats(None)
            return
        if "reuse_scale" in extra:  # exactly what was in use, so a resumed run is bit for bit
            reuse_scale = float(extra["reuse_scale"])
        else:
            reuse_scale = self.alpha / gv_norm if gv_norm > 0.0 else 0.0
        first = self.param_groups[0]["params"][0]
        if scalars_on_host(self.scalars, first.device):
            self._set_stats((gv_norm, reuse_scale))
            return
        self._set_stats(
            torch.tensor(
                [gv_norm, reuse_scale], dtype=accumulation_dtype(first.dtype), device=first.device
            )
        )
