"""The user's own model as a workload, end to end: ``-w module:function`` and ``-w timm:MODEL``.

The user's module is the ``my_workload.py`` of ``docs/extending.md``, copied out of that page into
a temporary folder, so the documented example is the one that runs. ``run``, ``bench`` and a small
sweep are real processes; the error cases run in this process (the CLI's own parsing, no training).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from looksam.cli.app import app

pytestmark = pytest.mark.slow

#: The page that documents ``-w module:function`` (the README links to it).
EXTENDING = Path(__file__).resolve().parents[2] / "docs" / "extending.md"

SPEC = """\
storage = "sqlite:///{root}/optuna.db"
[sweep]
name = "mine"
[workload]
name = "my_workload:make"
epochs = 1
device = "cpu"
[optimizers]
names = ["sgd", "looksam"]
[budget]
n_trials = 1
[timing]
rounds = 2
steps = 2
"""

#: Modules whose functions do not give a workload (imported in this process: unique names).
BAD_MODULES = {
    "cw_returns_int": "def make():\n    return 42\n",
    "cw_raises": "def make():\n    raise RuntimeError('no data here')\n",
}


def documented_example() -> str:
    """The ``my_workload.py`` of ``docs/extending.md``, as documented."""
    text = EXTENDING.read_text()
    start = text.index("```python\n# my_workload.py\n") + len("```python\n")
    return text[start : text.index("```", start)]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The user's folder: the documented module, modules that go wrong, a sweep spec."""
    folder = tmp_path_factory.mktemp("mine")
    (folder / "my_workload.py").write_text(documented_example())
    for name, source in BAD_MODULES.items():
        (folder / f"{name}.py").write_text(source)
    (folder / "spec.toml").write_text(SPEC.format(root=folder))
    (folder / "empty").mkdir()
    return folder


def _cli(
    cwd: Path, *args: str, pythonpath: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``looksam-bench ARGS`` as a fresh process in ``cwd`` (one thread: a shared CPU)."""
    exe = shutil.which("looksam-bench") or str(Path(sys.executable).parent / "looksam-bench")
    env = {k: v for k, v in os.environ.items() if k not in ("LOOKSAM_PLUGINS", "PYTHONPATH")}
    env.update(COLUMNS="200", NO_COLOR="1", OMP_NUM_THREADS="1")
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run(
        [exe, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=240, check=False
    )


# --- module:function, real processes -----------------------------------------------------------


def test_run_imports_the_module_from_the_current_directory(root: Path) -> None:
    proc = _cli(root, "run", "-w", "my_workload:make", "-o", "looksam", "--device", "cpu",
                "--json", "run.json")  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads((root / "run.json").read_text())
    assert result["config"]["workload"] == "my_workload:make"  # as the user wrote it
    assert result["status"] == "ok"
    assert result["steps"] == 100  # the module's defaults: 1000 examples, batch 50, 5 epochs
    assert result["final_accuracy"] > 0.5  # 4 classes: it learned
    summary = next(line for line in proc.stdout.splitlines() if "workload" in line)
    assert "my_workload:make" in summary


def test_bench_imports_the_module_from_pythonpath(root: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    args = ["bench", "-w", "my_workload:make", "-o", "sgd", "-o", "looksam", "--rounds", "2"]
    proc = _cli(tmp_path, *args, "--device", "cpu", "--json", str(out), pythonpath=root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert report["spec"]["workload"] == "my_workload:make"
    assert report["batch_size"] == 50
    costs = {row["optimizer"]: row for row in report["costs"]}
    assert costs["sgd"]["ratio"] == 1.0
    assert costs["looksam"]["floor"] == pytest.approx(1.2)


def test_a_sweep_trains_the_workload_its_spec_names(root: Path) -> None:
    proc = _cli(root, "sweep", "spec.toml", "--no-mlflow")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "my_workload:make" in proc.stdout
    assert "looksam" in proc.stdout
    assert (root / "reports" / "mine.html").exists()


# --- timm:MODEL, real processes ----------------------------------------------------------------


def test_bench_times_a_timm_model_on_random_data(tmp_path: Path) -> None:
    out = tmp_path / "timm.json"
    proc = _cli(tmp_path, "bench", "-w", "timm:resnet10t", "--data", "synthetic",
                "--device", "cpu", "-o", "sgd", "-o", "looksam", "--batch-size", "4",
                "--img-size", "32", "--rounds", "1", "--json", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert report["spec"]["workload"] == "timm:resnet10t,data=synthetic,img_size=32"
    assert [row["optimizer"] for row in report["costs"]] == ["sgd", "looksam"]
    assert "Step cost on timm:resnet10t,data=synthetic,img_size=32" in proc.stdout


# --- errors: one line, exit 2 ------------------------------------------------------------------


@pytest.fixture
def in_root(root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The user's folder importable in this process, as PYTHONPATH makes it for the CLI."""
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.chdir(root)
    return root


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["run", "-w", "nowhere_at_all:make"], "no module named 'nowhere_at_all'"),
        (["run", "-w", "my_workload:nope"], "has no 'nope'"),
        (["bench", "-w", "cw_returns_int:make"], "make() returned int, not a Workload"),
        (["run", "-w", "cw_raises:make"], "RuntimeError: no data here (cw_raises.py:2)"),
        (["run", "-w", "not-a-module:make"], "not a registered name, timm:MODEL or MODULE"),
        (["run", "-w", "my_workload:make", "--data-dir", "empty"], "brings its own data"),
        (["run", "-w", "digits-noisy", "--img-size", "32"], "--img-size only applies to timm"),
        (["bench", "-w", "timm:resnt10t", "--data", "synthetic"], "close matches: resnet10t"),
        (["run", "-w", "timm:resnet10t", "--data-dir", "empty"], "holds neither an ImageFolder"),
        (["run", "-w", "timm:resnet10t"], "pass --data-dir DIR"),
        (["bench", "-w", "timm:resnet10t", "--data", "real"], "data must be synthetic"),
    ],
)
def test_a_bad_workload_is_one_line(in_root: Path, args: list[str], needle: str) -> None:
    result = CliRunner().invoke(app, [*args, "--device", "cpu", "--json", "out.json"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert needle in lines[0]
    assert not (in_root / "out.json").exists()  # refused before anything ran
