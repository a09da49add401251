"""A method that needs sample ids, on a user's workload that gives none: `run` and a sweep's
`--dry-run` refuse it with exit 2 and one line, before anything is created or trained."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

#: A user's workload written against the bare Workload interface: batches, but no sample ids.
NO_IDS = """\
import torch
from torch import nn
from looksam.train.workloads import Workload


class Plain(Workload):
    name = "plain"
    summary = "batches without sample ids"
    default_epochs = 1
    default_batch_size = 8

    def build_model(self):
        return nn.Linear(4, 3)

    def prepare(self, device):
        self.device = device

    @property
    def num_train_examples(self):
        return 32

    def train_batches(self, batch_size, generator):
        for _ in range(32 // batch_size):
            yield torch.randn(batch_size, 4, generator=generator), torch.randint(
                0, 3, (batch_size,), generator=generator
            )

    def eval_batches(self, batch_size):
        yield torch.randn(8, 4), torch.randint(0, 3, (8,))


def make():
    return Plain()
"""

SPEC = """\
storage = "sqlite:///{root}/optuna.db"
[sweep]
name = "noids"
[workload]
name = "plain_workload:make"
device = "cpu"
[optimizers]
names = ["sgd", "saf"]
[budget]
n_trials = 1
"""

REFUSAL = "saf needs each example's position in the training set (sample ids)"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("noids")
    (folder / "plain_workload.py").write_text(NO_IDS)
    (folder / "spec.toml").write_text(SPEC.format(root=folder))
    return folder


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("looksam-bench") or str(Path(sys.executable).parent / "looksam-bench")
    env = {k: v for k, v in os.environ.items() if k not in ("LOOKSAM_PLUGINS", "PYTHONPATH")}
    env.update(COLUMNS="200", NO_COLOR="1", OMP_NUM_THREADS="1")
    return subprocess.run(
        [exe, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=240, check=False
    )


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if "__pycache__" not in p.parts}


def test_run_refuses_saf_on_a_workload_without_sample_ids(root: Path) -> None:
    before = _files(root)
    proc = _cli(root, "run", "-w", "plain_workload:make", "-o", "saf", "--json", "out.json")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert len(lines) == 1
    assert REFUSAL in lines[0]
    assert _files(root) == before  # no --json file, nothing else
    # the boundary: the same workload trains with an entry that needs no ids
    ok = _cli(root, "run", "-w", "plain_workload:make", "-o", "sam", "--max-steps", "2")
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_a_sweep_dry_run_refuses_saf_before_creating_anything(root: Path) -> None:
    before = _files(root)
    proc = _cli(root, "sweep", "spec.toml", "--dry-run")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    output = (proc.stdout + proc.stderr).strip()
    assert REFUSAL in output
    assert len(output.splitlines()) == 1
    assert _files(root) == before  # no study, no MLflow store, no report
