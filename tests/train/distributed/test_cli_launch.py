"""`looksam-bench run --nproc N`: a real torchrun launch, a killed rank, and the arguments.

The two subprocess tests start the installed entry point exactly as a user would
(``python -m looksam run --nproc 2 …``): the launcher, two ranks, gloo on the loopback.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest
from ddp_workers import loopback_env
from typer.testing import CliRunner

from looksam.cli.app import app
from looksam.train import distributed
from looksam.train.distributed import FAIL_AT_VARIABLE, RESULT_FILE_VARIABLE, launcher_failure

TINY = ["run", "-w", "digits-noisy", "-o", "looksam", "--k", "2", "--device", "cpu"]


def looksam(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **loopback_env(), "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "looksam", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=120,
        check=False,
    )


def test_nproc_2_trains_and_writes_one_result(tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    done = looksam(*TINY, "--max-steps", "4", "--nproc", "2", "--json", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("Run summary") == 1  # rank 0 prints, rank 1 does not
    data = json.loads(out.read_text())
    assert data["status"] == "ok"
    assert data["steps"] == 4
    assert data["world_size"] == 2
    assert len(data["per_rank_samples_per_second"]) == 2
    assert data["environment"]["backend"] == "gloo"
    assert data["config"]["perturbation"] == "global"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]  # no partial files left


def test_a_dead_rank_is_one_line_and_no_result(tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    args = ["run", "-w", "synthetic-mlp", "-o", "looksam", "--k", "2", "--device", "cpu"]
    args += ["--max-steps", "6", "--nproc", "2", "--json", str(out)]
    done = looksam(*args, env={FAIL_AT_VARIABLE: "1:2"})  # rank 1 dies before step 2
    assert done.returncode == 1
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: distributed run failed: rank 1 exited with code 1")
    assert "no result was written" in lines[0]
    assert "Run summary" not in done.stdout
    assert list(tmp_path.iterdir()) == []  # neither the JSON nor a partial one


runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--nproc", "2", "--batch-size", "63"], "does not divide by the 2 processes"),
        (["--perturbation", "local"], "choose one of: global, per-rank"),
        (["--perturbation", "per-rank", "--amp", "fp16"], "per-rank cannot be combined"),
        (["--nproc", "0"], "--nproc"),
    ],
)
def test_bad_parallel_options_exit_2_before_launching(
    monkeypatch: pytest.MonkeyPatch, args: list[str], needle: str
) -> None:
    monkeypatch.setattr(distributed.subprocess, "Popen", _never_launch)
    result = runner.invoke(app, [*TINY, *args], env={"COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    assert needle in result.output
    assert "Traceback" not in result.output


def _never_launch(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("must fail before starting any process")


class _FakeLauncher:
    """Stands in for torchrun: records the command, 'fails' like a launch whose rank 1 died."""

    commands: ClassVar[list[list[str]]] = []

    def __init__(self, command: list[str], env: dict[str, str], **kwargs: Any) -> None:
        self.commands.append(command)
        self.env = env
        self.returncode = 1

    def communicate(self) -> tuple[None, str]:
        # Rank 0 got as far as writing its file: the failure must still discard it.
        Path(self.env[RESULT_FILE_VARIABLE]).write_text('{"status": "ok"}')
        return None, _TORCHRUN_ROOT_CAUSE


def test_nproc_forwards_the_command_line_minus_nproc_and_json(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(distributed.subprocess, "Popen", _FakeLauncher)
    out = tmp_path / "r.json"
    args = [*TINY, "--rho", "0.3", "--channels-last", "--perturbation", "per-rank"]
    args += ["--hp", "momentum=0.8", "--hp", "nesterov=true"]  # repeatable: once per value
    result = runner.invoke(app, [*args, "--nproc", "3", "-b", "66", "--json", str(out)])
    assert result.exit_code == 1, result.output
    assert "rank 1 exited with code 1 (RuntimeError: boom)" in result.output
    assert list(tmp_path.iterdir()) == []
    command = _FakeLauncher.commands[-1]
    assert command[:4] == [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    assert "--nproc-per-node=3" in command
    forwarded = command[command.index("looksam") + 1 :]
    assert forwarded[0] == "run"
    assert "--nproc" not in forwarded
    assert "--json" not in forwarded
    pairs = dict(itertools.pairwise(forwarded))
    assert pairs["--rho"] == "0.3"
    assert pairs["--batch-size"] == "66"
    assert pairs["--perturbation"] == "per-rank"
    assert pairs["--k"] == "2"
    assert "--channels-last" in forwarded
    hp = [forwarded[i + 1] for i, arg in enumerate(forwarded) if arg == "--hp"]
    assert hp == ["momentum=0.8", "nesterov=true"]


def test_nproc_forwards_no_hp_when_none_was_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(distributed.subprocess, "Popen", _FakeLauncher)
    runner.invoke(app, [*TINY, "--nproc", "2"])
    assert "--hp" not in _FakeLauncher.commands[-1]


_TORCHRUN_ROOT_CAUSE = """\
[rank0]: RuntimeError: [../gloo/transport/tcp/pair.cc:545] Connection reset by peer
[rank1]: Traceback (most recent call last):
[rank1]: RuntimeError: boom
Traceback (most recent call last):
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
Failures:
[1]:
  rank      : 0 (local_rank: 0)
  exitcode  : -15 (pid: 12977)  (SIGTERM)
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  rank      : 1 (local_rank: 1)
  exitcode  : 1 (pid: 12978)
"""


def test_launcher_failure_names_the_root_cause_not_its_echo() -> None:
    message, users_fault = launcher_failure(_TORCHRUN_ROOT_CAUSE, 1)
    assert not users_fault
    assert message == (
        "distributed run failed: rank 1 exited with code 1 (RuntimeError: boom); "
        "no result was written"
    )


def test_launcher_failure_reports_a_signal_and_a_users_error() -> None:
    killed = "Root Cause (first observed failure):\n  rank      : 0\n  exitcode  : -9 (pid: 1)\n"
    assert "rank 0 was killed by signal 9" in launcher_failure(killed, 1)[0]
    message, users_fault = launcher_failure("[rank0]: error: no CIFAR-10 data in /x\n", 1)
    assert (message, users_fault) == ("no CIFAR-10 data in /x", True)


class _ScriptedLauncher:
    """Stands in for torchrun in the library's launch: exits as told, rank 0 writing ``result``."""

    def __init__(self, returncode: int, result: str | None, stderr: str = "") -> None:
        self.returncode_after = returncode
        self.result = result
        self.stderr = stderr
        self.commands: list[list[str]] = []
        self.signals: list[int] = []

    def __call__(
        self, command: list[str], env: dict[str, str], **kwargs: Any
    ) -> _ScriptedLauncher:
        self.commands.append(command)
        self.env = env
        self.returncode: int | None = None
        return self

    def communicate(self) -> tuple[None, str]:
        if self.result is not None:
            Path(self.env[RESULT_FILE_VARIABLE]).write_text(self.result)
        self.returncode = self.returncode_after
        return None, self.stderr

    def send_signal(self, signum: int) -> None:
        self.signals.append(signum)


def test_launch_locally_moves_the_result_into_place_and_returns_its_status(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    launcher = _ScriptedLauncher(0, '{"status": "diverged"}', stderr="a rank's warning\n")
    monkeypatch.setattr(distributed.subprocess, "Popen", launcher)
    out = tmp_path / "r.json"
    assert distributed.launch_locally(["run", "--k", "2"], 2, out) == "diverged"
    assert json.loads(out.read_text()) == {"status": "diverged"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]
    assert launcher.commands[0][-3:] == ["run", "--k", "2"]
    assert "--nproc-per-node=2" in launcher.commands[0]
    assert launcher.env["OMP_NUM_THREADS"]


@pytest.mark.parametrize(
    ("returncode", "result", "stderr", "users_fault"),
    [
        (1, '{"status": "ok"}', _TORCHRUN_ROOT_CAUSE, False),  # rank 1 died after rank 0 wrote
        (1, None, "[rank0]: error: no CIFAR-10 data in /x\n", True),
        (0, None, "", False),  # a clean exit without a result is still no result
    ],
)
def test_launch_locally_raises_one_line_and_leaves_no_file(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    returncode: int,
    result: str | None,
    stderr: str,
    users_fault: bool,
) -> None:
    monkeypatch.setattr(
        distributed.subprocess, "Popen", _ScriptedLauncher(returncode, result, stderr)
    )
    with pytest.raises(distributed.LaunchError) as raised:
        distributed.launch_locally(["run"], 2, tmp_path / "r.json")
    assert raised.value.users_fault is users_fault
    assert "\n" not in raised.value.message
    assert list(tmp_path.iterdir()) == []


def test_launch_locally_interrupted_stops_the_ranks_and_writes_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    class Interrupted(_ScriptedLauncher):
        def communicate(self) -> tuple[None, str]:
            if not self.signals:
                Path(self.env[RESULT_FILE_VARIABLE]).write_text('{"status": "ok"}')
                raise KeyboardInterrupt
            return None, ""

    launcher = Interrupted(0, None)
    monkeypatch.setattr(distributed.subprocess, "Popen", launcher)
    with pytest.raises(KeyboardInterrupt):
        distributed.launch_locally(["run"], 2, tmp_path / "r.json")
    assert launcher.signals == [signal.SIGINT]
    assert list(tmp_path.iterdir()) == []
