"""bench/gpu.sh: the CPU dry run end to end, the sync allowance rule and the host-read counter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from looksam.bench import gpu
from looksam.bench.suite import default_optimizers
from looksam.optim import get_optimizer_info, list_optimizers
from looksam.train.workloads import get_workload_info

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "gpu.sh"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    """bench/gpu.sh as a real process, with this interpreter and without $OUT."""
    full_env = {k: v for k, v in os.environ.items() if k != "OUT"}
    full_env["PYTHON"] = sys.executable
    return subprocess.run(
        [str(SCRIPT), *args],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def dry_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("gpu-bench") / "out"  # created by the script
    return _run("--dry-run", "--out", str(out)), out


@pytest.mark.slow
def test_dry_run_writes_both_files_and_exits_0(
    dry_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    done, out = dry_run
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "results.json").is_file()
    assert (out / "results.md").is_file()
    assert done.stdout == (out / "results.md").read_text()  # the Markdown is printed too


@pytest.mark.slow
def test_dry_run_json_has_every_optimizer_and_check(
    dry_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, out = dry_run
    data: dict[str, Any] = json.loads((out / "results.json").read_text())
    assert {"mode", "machine", "step_costs", "host_sync", "compile", "checks", "passed"} <= set(
        data
    )
    assert data["mode"] == "dry-run"
    assert data["passed"] is True
    assert {"device_name", "torch_version", "cuda_version"} <= set(data["machine"])
    sam_family = [i.name for i in list_optimizers() if i.wraps_base]
    # One row per registered SAM-family optimizer plus the base, in the suite's order.
    (table,) = data["step_costs"]
    assert table["workload"] == "synthetic-mlp"
    assert [row["optimizer"] for row in table["rows"]] == list(default_optimizers())
    assert len(table["rows"]) == len(sam_family) + 1
    for row in table["rows"]:
        assert row["ratio"] > 0
        assert row["samples_per_second"] > 0
        assert {"ratio_q1", "ratio_q3", "floor", "overhead"} <= set(row)
    sync = data["host_sync"]
    assert [row["optimizer"] for row in sync["rows"]] == sam_family
    assert sync["enforced"] is True  # the optimizers are sync-free: the dry run holds them to it
    for row in sync["rows"]:
        assert row["error"] is None
        assert row["allowance"] == get_optimizer_info(row["optimizer"]).host_read_allowance
        assert row["plain_steps"] + row["look_steps"] == sync["steps"]
    assert [row["optimizer"] for row in data["compile"]["rows"]] == list(gpu.COMPILED_OPTIMIZERS)
    for row in data["compile"]["rows"]:
        assert row["error"] is None
        assert row["losses_agree"] is True
        assert row["ratio"] > 0
    names = {check["name"] for check in data["checks"]}
    assert "step-costs/synthetic-mlp" in names
    assert {f"host-sync/{name}" for name in sam_family} <= names
    assert {f"compile/{name}" for name in gpu.COMPILED_OPTIMIZERS} <= names
    for check in data["checks"]:
        assert check["passed"] or not check["enforced"], check
        assert check["reason"]


@pytest.mark.slow
def test_dry_run_markdown_has_the_tables(
    dry_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, out = dry_run
    text = (out / "results.md").read_text()
    assert text.startswith("## GPU benchmark: dry run on CPU")
    for heading in (
        "### Step cost relative to SGD: synthetic-mlp",
        "### Host reads per optimizer step",
        "### torch.compile against eager: synthetic-mlp",
        "### Checks",
    ):
        assert heading in text
    assert "| Optimizer | Step / SGD | IQR |" in text
    for info in list_optimizers():
        if info.wraps_base:
            assert f"| {info.label} |" in text


# ---------------------------------------------------------------------- the host-read counter


class _Toy(torch.optim.Optimizer):
    """Plain gradient descent that reads one norm to the host per step."""

    def __init__(self, params: Any) -> None:
        super().__init__(params, {"lr": 0.1})

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                norm = p.grad.norm().item()  # the deliberate host read
                p.add_(p.grad, alpha=-group["lr"] / max(norm, 1.0))
        return loss


def _toy() -> tuple[nn.Module, _Toy, Any]:
    torch.manual_seed(0)
    model = nn.Linear(4, 1, bias=False)
    opt = _Toy(model.parameters())
    x = torch.randn(8, 4)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = model(x).pow(2).mean()
        loss.item()  # a read in the forward pass: the model's, not the optimizer's
        loss.backward()
        return loss

    return model, opt, closure


def test_counter_counts_the_steps_read_and_ignores_the_forward_pass() -> None:
    _, opt, closure = _toy()
    with gpu.count_step_host_reads(opt) as counter:
        opt.step(closure)
        opt.step(closure=closure)
        closure()  # outside any step: not counted either
    assert [s.host_reads for s in counter.steps] == [1, 1]
    assert all(s.syncs is None for s in counter.steps)
    (site,) = {site for s in counter.steps for site in s.sites}
    assert site.startswith("test_gpu_bench.py:")


def test_counter_counts_each_kind_of_read_once_and_restores_everything() -> None:
    t = torch.tensor([2.0])

    class Reader(_Toy):
        @torch.no_grad()
        def step(self, closure: Any = None) -> Any:  # type: ignore[override]
            float(t)
            bool(t)
            int(t)
            t.tolist()
            return None

    opt = Reader([torch.zeros(1, requires_grad=True)])
    with gpu.count_step_host_reads(opt) as counter:
        opt.step()
    assert counter.steps[0].host_reads == 4
    for name in gpu.HOST_READ_METHODS:
        assert name not in torch.Tensor.__dict__
    assert "step" not in vars(opt)
    assert float(t) == 2.0


def test_sync_warnings_count_only_while_the_steps_own_code_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No GPU here: a fake sync-debug mode warns like CUDA's does wherever a sync happens.
    mode: dict[str, Any] = {"now": 0}
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", lambda m: mode.update(now=m))
    monkeypatch.setattr(torch.cuda, "get_sync_debug_mode", lambda: 0)

    def sync() -> None:
        if mode["now"] == "warn":
            warnings.warn("called a synchronizing CUDA operation", UserWarning, stacklevel=2)

    class Syncing(_Toy):
        def step(self, closure: Any = None) -> Any:  # type: ignore[override]
            closure()
            sync()  # the optimizer's own sync: counted
            return None

    def closure() -> None:
        sync()  # the model's: sync-debug mode is off while the closure runs
        warnings.warn("unrelated", UserWarning, stacklevel=1)

    opt = Syncing([torch.zeros(1, requires_grad=True)])

    def two_steps() -> gpu.HostReadCounter:
        with gpu.count_step_host_reads(opt, sync_debug=True) as counter:
            opt.step(closure)
            opt.step(closure)
        return counter

    with pytest.warns(UserWarning, match="unrelated"):  # other warnings are issued again
        counter = two_steps()
    assert [s.syncs for s in counter.steps] == [1, 1]
    assert [s.host_reads for s in counter.steps] == [0, 0]
    assert mode["now"] == 0  # the previous mode is back
    assert all(
        site.startswith("sync@test_gpu_bench.py:") for s in counter.steps for site in s.sites
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_real_item_in_the_step_is_one_sync_on_cuda() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 1, bias=False).cuda()
    opt = _Toy(model.parameters())
    x = torch.randn(8, 4, device="cuda")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = model(x).pow(2).mean()
        loss.backward()
        return loss

    opt.step(closure)
    with gpu.count_step_host_reads(opt, sync_debug=True) as counter:
        opt.step(closure)
    assert counter.steps[0].syncs == 1
    assert counter.steps[0].host_reads == 1


# ---------------------------------------------------------------------- rounds and bad input


def test_rounds_fit_the_budget_within_their_limits() -> None:
    setting = gpu.GPU_PLAN.step_costs[0]
    names = default_optimizers()
    few = gpu.plan_rounds(setting, names, 0.05, 1.0, 60.0)
    many = gpu.plan_rounds(setting, names, 0.05, 1.0, 200.0)
    assert setting.min_rounds <= few < many <= setting.max_rounds
    assert gpu.plan_rounds(setting, names, 0.05, 1.0, 1.0) == setting.min_rounds
    assert gpu.plan_rounds(setting, names, 1e-6, 0.0, 1e6) == setting.max_rounds


@pytest.mark.parametrize("plan", [gpu.GPU_PLAN, gpu.DRY_RUN_PLAN], ids=["gpu", "dry-run"])
def test_plans_name_registered_workloads_and_fit_their_budget(plan: gpu.Plan) -> None:
    for setting in plan.step_costs:
        get_workload_info(setting.workload)
        assert setting.steps_per_round % setting.k == 0  # every round sees the same mix
        assert 1 <= setting.min_rounds <= setting.max_rounds
    get_workload_info(plan.sync.workload)
    get_workload_info(plan.compile.workload)
    assert plan.compile.loss_steps > plan.compile.k  # the losses include a look step
    shares = sum(s.share for s in plan.step_costs) + plan.sync.share + plan.compile.share
    assert shares <= 1.0
    assert plan.enforce_syncs  # host reads fail the dry run too


def test_an_out_that_is_a_file_exits_2_with_one_line(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "results.txt"
    not_a_dir.write_text("x")
    done = _run("--dry-run", "--out", str(not_a_dir))
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1
    assert "not a directory" in done.stderr
    assert not_a_dir.read_text() == "x"


def test_out_defaults_to_the_out_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    not_a_dir = tmp_path / "results.txt"
    not_a_dir.write_text("x")
    monkeypatch.setenv("OUT", str(not_a_dir))
    with pytest.raises(SystemExit) as stopped:
        gpu.main(["--dry-run"])
    assert stopped.value.code == 2
    assert f"$OUT {not_a_dir} is not a directory" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--bogus"], ["--time-budget", "0"], ["--time-budget", "x"]])
def test_bad_options_exit_2_with_one_line(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        gpu.main(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("bench/gpu.sh: error:")
