"""A user's own optimizers, loaded as a plugin, work in every command: real processes end to end.

The plugin module (written into a temporary folder on PYTHONPATH, never into the package)
registers a copy of SAM under a new name, a new SAM-family class with its own hyperparameter,
colour and display name, and a workload of its own. It is loaded by ``--plugin``, by a sweep
spec's ``plugins``, by ``LOOKSAM_PLUGINS`` and by an installed distribution's entry point.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

PLUGIN = '''\
"""A user's plugin: one copy of SAM, one optimizer and one workload of its own."""
import dataclasses

from torch import nn

from looksam.train.workloads import register_workload
from looksam.train.workloads.digits import DigitsNoisy
from looksam.optim import (
    HyperParameter, OptimizerInfo, SharpnessAwareOptimizer, get_optimizer_info,
    register_optimizer,
)

register_optimizer(dataclasses.replace(get_optimizer_info("sam"), name="mysam"))


class EverySAM(SharpnessAwareOptimizer):
    """SAM's gradient every `period`-th step, the plain gradient in between."""

    def __init__(self, base, *, rho, period):
        super().__init__(base, rho=rho, k=period)


register_optimizer(
    OptimizerInfo(
        name="everysam",
        summary="EverySAM: SAM every period-th step (a user's plugin)",
        display_name="EverySAM",
        colour="#AA3377",
        factory=lambda base, hp: EverySAM(base, rho=hp["rho"], period=hp["period"]),
        hyperparameters=(
            HyperParameter("rho", 0.05, 0.0, None, search=(0.01, 0.5), log=True),
            HyperParameter("period", 3, 1, None, kind="int", search=(2, 4)),
        ),
        passes=lambda hp: (1 + 1 / hp["period"], 1 + 1 / hp["period"]),
        cost_formula="1 + 1/period",
        wraps_base=True,
        sam_role="approximation",
    )
)


@register_workload
class MyDigits(DigitsNoisy):
    """The user's own problem: the noisy digits with a smaller MLP."""

    name = "my-digits"
    summary = "8x8 noisy digits, MLP 64-32-10 (a user's plugin)"

    def build_model(self):
        return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
'''

#: A plugin whose registration the registry refuses (a colour that is not #rrggbb).
BAD_PLUGIN = """\
from looksam.optim import OptimizerInfo, get_optimizer_info, register_optimizer

register_optimizer(OptimizerInfo(
    name="bad", summary="bad", factory=get_optimizer_info("sgd").factory, colour="red"
))
"""

#: What an installed package's entry point names: a function, called with no arguments.
ENTRY_POINT_MODULE = """\
import dataclasses

from looksam.optim import get_optimizer_info, register_optimizer


def register():
    register_optimizer(dataclasses.replace(get_optimizer_info("sam"), name="epsam"))
"""

SPEC = """\
plugins = ["my_opt"]
storage = "sqlite:///{root}/optuna.db"

[sweep]
name = "plug"
[workload]
name = "digits-noisy"
epochs = 1
device = "cpu"
[optimizers]
names = ["mysam", "everysam"]
[space.everysam]
period = {{low = 2, high = 4}}
lr = {{low = 0.02, high = 0.1, log = true}}
[budget]
n_trials = 2
[timing]
rounds = 2
steps = 2
[tracking]
uri = "sqlite:///{root}/mlflow.db"
"""


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The user's folder: the plugins, a sweep spec, and a fake installed distribution."""
    folder = tmp_path_factory.mktemp("plugins")
    (folder / "my_opt.py").write_text(PLUGIN)
    (folder / "bad_opt.py").write_text(BAD_PLUGIN)
    (folder / "spec.toml").write_text(SPEC.format(root=folder))
    site = folder / "site"
    dist_info = site / "mypkg-0.1.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: mypkg\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text("[looksam.optimizers]\nepsam = ep_opt:register\n")
    (site / "ep_opt.py").write_text(ENTRY_POINT_MODULE)
    return folder


def _cli(
    root: Path, *args: str, pythonpath: str | None = None, plugins_env: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``looksam-bench ARGS`` as a fresh process in ``root``, with the user's PYTHONPATH."""
    exe = shutil.which("looksam-bench") or str(Path(sys.executable).parent / "looksam-bench")
    env = {k: v for k, v in os.environ.items() if k not in ("LOOKSAM_PLUGINS", "PYTHONPATH")}
    env.update(PYTHONPATH=pythonpath or str(root), COLUMNS="200", NO_COLOR="1")
    if plugins_env is not None:
        env["LOOKSAM_PLUGINS"] = plugins_env
    return subprocess.run(
        [exe, *args], cwd=root, env=env, capture_output=True, text=True, timeout=240, check=False
    )


def _one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_optimizers_lists_the_plugin_however_often_it_is_named(root: Path) -> None:
    # --plugin twice and LOOKSAM_PLUGINS too: each module is imported, and registers, once
    proc = _cli(
        root, "--plugin", "my_opt", "--plugin", "my_opt", "optimizers", plugins_env="my_opt"
    )
    assert proc.returncode == 0, proc.stderr
    rows = {line.split("│")[1].strip(): line for line in proc.stdout.splitlines() if "│" in line}
    assert "2.00" in rows["mysam"]  # passes per step
    assert "1.33" in rows["everysam"]
    assert "period=3 int ≥1" in proc.stdout  # its own hyperparameter, on the next line


def test_run_trains_the_plugin_optimizer_with_its_hyperparameter_on_its_workload(
    root: Path,
) -> None:
    out = root / "run.json"
    proc = _cli(
        root, "--plugin", "my_opt", "run", "-w", "my-digits", "-o", "everysam",
        "--hp", "period=2", "--max-steps", "8", "--epochs", "1", "--device", "cpu",
        "--json", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["status"] == "ok"
    assert (result["config"]["workload"], result["config"]["optimizer"]) == (
        "my-digits",
        "everysam",
    )
    assert result["config"]["hyperparameters"] == {"period": 2}
    assert (result["steps"], result["forward_backward_passes"]) == (8, 12)  # a look every 2nd


def test_bench_times_the_plugin_optimizers_against_sgd(root: Path) -> None:
    out = root / "bench.json"
    proc = _cli(
        root, "--plugin", "my_opt", "bench", "-w", "digits-noisy", "-o", "sgd", "-o", "mysam",
        "-o", "everysam", "--rounds", "2", "--device", "cpu", "--json", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    costs = {row["optimizer"]: row for row in json.loads(out.read_text())["costs"]}
    assert costs["mysam"]["floor"] == 2.0
    assert costs["everysam"]["floor"] == pytest.approx(4 / 3)
    assert costs["sgd"]["ratio"] == 1.0


@pytest.fixture(scope="module")
def swept(root: Path) -> subprocess.CompletedProcess[str]:
    """The spec names the plugin; the command line does not."""
    return _cli(root, "sweep", "spec.toml")


def test_a_sweep_loads_the_plugins_its_spec_names(
    root: Path, swept: subprocess.CompletedProcess[str]
) -> None:
    assert swept.returncode == 0, swept.stdout + swept.stderr
    assert "everysam" in swept.stdout
    assert "period=" in swept.stdout  # the plugin's own hyperparameter was searched
    assert (root / "reports" / "plug.html").exists()


def test_report_shows_the_plugin_optimizers_on_the_terminal_and_in_json(
    root: Path, swept: subprocess.CompletedProcess[str]
) -> None:
    assert swept.returncode == 0, swept.stderr
    out = root / "report.json"
    proc = _cli(root, "report", "spec.toml", "--json", str(out), "--html", str(root / "r.html"))
    assert proc.returncode == 0, proc.stderr
    assert "mysam" in proc.stdout
    assert "everysam" in proc.stdout
    data = json.loads(out.read_text())
    assert [row["optimizer"] for row in data["leaderboard"]] == ["mysam", "everysam"]
    assert data["spec"]["plugins"] == ["my_opt"]
    html = (root / "r.html").read_text()
    assert "EverySAM" in html
    assert "#AA3377" in html  # the plugin's own colour


def test_report_by_sweep_name_loads_the_plugins_the_sweep_recorded(
    root: Path, swept: subprocess.CompletedProcess[str]
) -> None:
    """No spec and no --plugin: the studies remember which plugins named their optimizers."""
    assert swept.returncode == 0, swept.stderr
    storage = f"sqlite:///{root}/optuna.db"
    proc = _cli(root, "report", "--sweep", "plug", "--storage", storage, "--html", "r2.html")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "everysam" in proc.stdout
    assert "mysam" in proc.stdout


@pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")  # mlflow's
def test_mlflow_holds_the_plugin_optimizers_runs(
    root: Path, swept: subprocess.CompletedProcess[str]
) -> None:
    assert swept.returncode == 0, swept.stderr
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root}/mlflow.db")
    experiment = client.get_experiment_by_name("plug")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    trials = [r for r in runs if r.data.tags.get("looksam.role") == "trial"]
    assert {r.data.params["optimizer"] for r in trials} == {"mysam", "everysam"}
    assert all(r.info.status == "FINISHED" for r in trials)
    assert any("period" in r.data.params for r in trials)
    studies = [r for r in runs if r.data.tags.get("looksam.role") == "study"]
    assert {r.data.params["plugins"] for r in studies} == {'["my_opt"]'}


def test_an_installed_entry_point_is_loaded_without_any_flag(root: Path) -> None:
    proc = _cli(root, "optimizers", pythonpath=str(root / "site"))
    assert proc.returncode == 0, proc.stderr
    assert "epsam" in proc.stdout
    assert "mysam" not in proc.stdout


def test_a_missing_plugin_module_is_one_line(root: Path) -> None:
    line = _one_line_error(_cli(root, "--plugin", "does_not_exist", "optimizers"))
    assert "does_not_exist" in line
    assert "no module named" in line


def test_a_plugin_whose_entry_the_registry_refuses_is_one_line(root: Path) -> None:
    line = _one_line_error(_cli(root, "--plugin", "bad_opt", "optimizers"))
    assert "bad_opt" in line
    assert "colour must look like" in line
    assert "bad_opt.py:3" in line  # the plugin's own line that registered it


def test_a_spec_naming_a_missing_plugin_is_one_line_naming_file_and_module(root: Path) -> None:
    spec = root / "missing.toml"
    spec.write_text('plugins = ["nowhere_to_be_found"]\n[optimizers]\nnames = ["sgd"]\n')
    line = _one_line_error(_cli(root, "sweep", str(spec), "--dry-run"))
    assert "missing.toml" in line
    assert "nowhere_to_be_found" in line
