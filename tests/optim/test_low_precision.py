"""Half-precision parameters: every wrapper keeps their dtype, and trains close to float32.

Norms and LookSAM's stored g and g_v use float32 for bf16 parameters (``accumulation_dtype``), but
w + ε and every gradient the base optimizer sees must stay in the parameters' own dtype: a float32
w + ε would make the second pass mix dtypes.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

from looksam.optim import create_optimizer, get_optimizer_info, list_optimizers

#: Every test here runs on both scalar paths (conftest's ``scalar_path``).
pytestmark = pytest.mark.usefixtures("scalar_path")

#: The wrappers a plain closure drives (the contract's methods have tests of their own).
SAM_FAMILY = [info.name for info in list_optimizers() if info.wraps_base and info.drop_in]
STEPS = 6


def _train(name: str, dtype: torch.dtype) -> tuple[list[Tensor], list[torch.dtype]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3)).to(dtype)
    info = get_optimizer_info(name)
    hp: dict[str, Any] = {"k": 2} if info.takes_k else {}
    opt: Any = create_optimizer(name, model, base="sgd", total_steps=STEPS, lr=0.05, **hp)
    if not info.fixed_schedule:
        opt.replay_look_schedule(lambda t: t % 2 == 0)
    seen: list[torch.dtype] = []
    for step in range(STEPS):
        generator = torch.Generator().manual_seed(step)
        x = torch.randn(32, 6, generator=generator).to(dtype)
        y = torch.randint(0, 3, (32,), generator=generator)

        def closure(x: Tensor = x, y: Tensor = y) -> Tensor:
            opt.zero_grad()
            seen.extend(p.dtype for p in model.parameters())  # at w and at w + ε
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            return loss

        opt.step(closure)
    return [p.detach().float() for p in model.parameters()], seen


@pytest.mark.parametrize("name", SAM_FAMILY)
def test_bf16_parameters_keep_their_dtype_and_follow_float32(name: str) -> None:
    low, seen = _train(name, torch.bfloat16)
    assert set(seen) == {torch.bfloat16}  # also during the perturbed pass
    assert all(torch.isfinite(p).all() for p in low)
    full, _ = _train(name, torch.float32)
    # bf16 keeps 8 bits of mantissa. Six steps stay within a few of its ulps of float32; Look-
    # LayerSAM's per-layer radius amplifies the rounding most (0.033 at worst, as it did before
    # the steps were made sync-free).
    torch.testing.assert_close(low, full, rtol=0.1, atol=0.05)
