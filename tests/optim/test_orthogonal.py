"""LookSAM's stored g_v is the component of g_s orthogonal to g.

g and g_s are captured through the two-phase API: the gradients are cloned before
``first_step()`` (g, at w) and after the second backward pass (g_s, at w + ε).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor
from torch.testing import assert_close

from looksam import LayerLookSAM, LookSAM

#: Every test here runs on both scalar paths (conftest's ``scalar_path``).
pytestmark = pytest.mark.usefixtures("scalar_path")


def _clone_grads(params: list[Tensor]) -> list[Tensor]:
    grads = []
    for p in params:
        assert p.grad is not None
        grads.append(p.grad.detach().clone())
    return grads


@pytest.mark.parametrize("wrapper", [LookSAM, LayerLookSAM])
def test_gv_is_orthogonal_to_g_and_reconstructs_gs(
    wrapper: type[LookSAM],
    make_mlp: Callable[..., Any],
    make_batch: Callable[..., Any],
    make_closure: Callable[..., Any],
    flatten: Callable[[Any], Tensor],
) -> None:
    """On each look step: ⟨g_v, g⟩ ≈ 0, β·g + g_v = g_s with β = ⟨g, g_s⟩/‖g‖², and the cached
    ``gv_norm`` is ‖g_v‖. Plain steps in between leave the stored g_v untouched."""
    model = make_mlp()
    params = list(model.parameters())
    opt = wrapper(torch.optim.SGD(params, lr=0.1, momentum=0.9), rho=0.1, k=2, alpha=0.7)
    x, y = make_batch()
    closure = make_closure(model, opt, x, y)

    for step in range(6):
        closure()
        if not opt.is_look_step:
            stored = [opt.state[p]["g_v"].clone() for p in params]
            opt.second_step()
            assert_close([opt.state[p]["g_v"] for p in params], stored, rtol=0, atol=0)
            continue

        g = _clone_grads(params)
        opt.first_step()
        closure()
        g_s = _clone_grads(params)
        opt.second_step()

        g_v = flatten([opt.state[p]["g_v"] for p in params])
        g_flat, gs_flat = flatten(g), flatten(g_s)
        assert g_v.norm() > 1e-4 * gs_flat.norm(), f"step {step}: g_v too small to be informative"
        cosine = torch.dot(g_v, g_flat) / (g_v.norm() * g_flat.norm())
        assert abs(cosine.item()) < 1e-10, f"step {step}: g_v not orthogonal to g"
        beta = torch.dot(g_flat, gs_flat) / torch.dot(g_flat, g_flat)
        assert_close(beta * g_flat + g_v, gs_flat, rtol=1e-12, atol=1e-14)
        assert opt.gv_norm == pytest.approx(g_v.norm().item(), rel=1e-12)
    assert opt.steps_done == 6
