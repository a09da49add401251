"""Checkpointing: a LookSAM run saved at step 7 and resumed elsewhere continues bit-for-bit.

With k = 3 the checkpoint falls between look steps (6 and 9), so steps 7 and 8 of the resumed run
depend on the g_v and ‖g_v‖ stored at step 6 as well as on the base optimizer's moments.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch

from looksam import LookSAM

#: Every test here runs on both scalar paths (conftest's ``scalar_path``).
pytestmark = pytest.mark.usefixtures("scalar_path")

SAVE_AT, TOTAL = 7, 14

# Shared verbatim by this process and the fresh interpreter, so both build the same run.
BUILD_SOURCE = textwrap.dedent(
    """
    import torch
    from torch import nn

    from looksam import LookSAM


    def build(base_name):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()
        if base_name == "sgd":
            base = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
        else:
            base = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-2)
        return model, LookSAM(base, rho=0.05, k=3, alpha=0.7, scalars=SCALARS)


    def batch(t):
        gen = torch.Generator().manual_seed(1000 + t)
        x = torch.randn(16, 5, generator=gen, dtype=torch.float64)
        return x, torch.randn(16, 3, generator=gen, dtype=torch.float64)


    def train(model, opt, start, stop):
        for t in range(start, stop):
            x, y = batch(t)

            def closure():
                opt.zero_grad()
                loss = nn.functional.mse_loss(model(x), y)
                loss.backward()
                return loss

            opt.step(closure)
    """
)

RESUME_SOURCE = textwrap.dedent(
    """
    import sys

    base_name, checkpoint, out, start, stop = sys.argv[1:]
    model, opt = build(base_name)
    state = torch.load(checkpoint)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    assert opt.steps_done == int(start), opt.steps_done
    train(model, opt, int(start), int(stop))
    torch.save([p.detach() for p in model.parameters()], out)
    """
)

BASES = ["sgd", "adamw"]


def _namespace(scalars: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {"SCALARS": scalars}
    exec(BUILD_SOURCE, namespace)
    return namespace


@pytest.mark.parametrize("base_name", BASES)
def test_resume_in_fresh_process_is_bit_identical(
    base_name: str, tmp_path: Path, scalar_path: str
) -> None:
    """14 uninterrupted steps == 7 steps, torch.save, then steps 7..14 in a new interpreter."""
    ns = _namespace(scalar_path)
    model, opt = ns["build"](base_name)
    ns["train"](model, opt, 0, TOTAL)
    uninterrupted = [p.detach().clone() for p in model.parameters()]

    model, opt = ns["build"](base_name)
    ns["train"](model, opt, 0, SAVE_AT)
    checkpoint = tmp_path / "checkpoint.pt"
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, checkpoint)

    script = tmp_path / "resume.py"
    script.write_text(f"SCALARS = {scalar_path!r}\n" + BUILD_SOURCE + RESUME_SOURCE)
    out = tmp_path / "resumed.pt"
    args = [base_name, str(checkpoint), str(out), str(SAVE_AT), str(TOTAL)]
    proc = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    resumed = torch.load(out)

    assert len(resumed) == len(uninterrupted)
    for a, b in zip(resumed, uninterrupted, strict=True):
        assert torch.equal(a, b)
    # Not vacuous: the run moved after the checkpoint.
    assert not all(torch.equal(a, b) for a, b in zip(resumed, model.parameters(), strict=True))


@pytest.mark.parametrize(
    ("base_name", "moment_key"), [("sgd", "momentum_buffer"), ("adamw", "exp_avg")]
)
def test_state_dict_contents_and_in_process_resume(
    base_name: str, moment_key: str, tmp_path: Path, scalar_path: str
) -> None:
    """The state_dict carries the base's moments, steps_done, g_v and ‖g_v‖; loading it into a
    fresh wrapper keeps the groups shared with the base and resumes bit-identically."""
    ns = _namespace(scalar_path)
    model, opt = ns["build"](base_name)
    ns["train"](model, opt, 0, SAVE_AT)
    path = tmp_path / "opt.pt"
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, path)

    sd = torch.load(path)["opt"]
    n_params = len(list(model.parameters()))
    assert sd["sam_family"]["steps_done"] == SAVE_AT
    assert sd["sam_family"]["gv_norm"] == opt.gv_norm > 0.0
    assert all(moment_key in sd["base"]["state"][i] for i in range(n_params))
    assert all("g_v" in sd["state"][i] for i in range(n_params))
    for i, p in enumerate(model.parameters()):
        assert torch.equal(sd["state"][i]["g_v"], opt.state[p]["g_v"])

    fresh_model, fresh = ns["build"](base_name)
    fresh_model.load_state_dict(torch.load(path)["model"])
    fresh.load_state_dict(sd)
    assert fresh.param_groups is fresh.base.param_groups
    assert fresh.steps_done == SAVE_AT
    assert not fresh.is_look_step
    assert fresh.gv_norm == opt.gv_norm
    for p_old, p_new in zip(model.parameters(), fresh_model.parameters(), strict=True):
        assert torch.equal(fresh.state[p_new]["g_v"], opt.state[p_old]["g_v"])
        old_moment = opt.base.state[p_old][moment_key]
        assert torch.equal(fresh.base.state[p_new][moment_key], old_moment)

    # The groups stay shared after loading: an lr change on the wrapper reaches the base.
    fresh.param_groups[0]["lr"] = 0.123
    assert fresh.base.param_groups[0]["lr"] == 0.123
    fresh.param_groups[0]["lr"] = sd["param_groups"][0]["lr"]

    ns["train"](model, opt, SAVE_AT, TOTAL)
    ns["train"](fresh_model, fresh, SAVE_AT, TOTAL)
    for a, b in zip(model.parameters(), fresh_model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_load_state_dict_rejects_a_plain_optimizer_state() -> None:
    """A base optimizer's state_dict is not a wrapper checkpoint: clear ValueError."""
    w = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    base = torch.optim.SGD([w], lr=0.1)
    opt = LookSAM(base, rho=0.05, k=3)
    with pytest.raises(ValueError, match="missing keys"):
        opt.load_state_dict(base.state_dict())
