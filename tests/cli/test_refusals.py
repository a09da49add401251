"""Bad input, as a hostile user types it, in real processes: exit 2, one line, nothing created.

Each case runs ``python -m looksam`` in an empty working directory (the default stores, report
and MLflow folders would land there) and checks the exit code, that the answer is one line with
no traceback, and that the directory holds afterwards exactly what it held before, byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
QUICK = REPO / "sweeps" / "quick.toml"


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        if p.is_file()
        else ""
        for p in sorted(folder.rglob("*"))
    }


def _refused_together(cwd: Path, *commands: tuple[str, ...]) -> list[str]:
    """Run each command line as its own CLI process in ``cwd``, side by side (they are
    independent, and a second core is otherwise idle); assert each exits 2 with one line and no
    traceback, and that nothing in ``cwd`` was created or changed. Returns the lines."""
    before = _snapshot(cwd)
    env = {**os.environ, "COLUMNS": "400", "NO_COLOR": "1"}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "looksam", *args],
            cwd=cwd,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for args in commands
    ]
    lines = []
    for process in processes:
        output = process.communicate(timeout=180)[0].strip()
        assert process.returncode == 2, output
        assert "Traceback" not in output, output
        assert len(output.splitlines()) == 1, output
        assert output.startswith("error: "), output
        lines.append(output)
    assert _snapshot(cwd) == before, "a refusal created or changed a file"
    return lines


def _refused(cwd: Path, *args: str) -> str:
    """Run the CLI in ``cwd``; assert exit 2, one line, no traceback, nothing created or changed.
    Returns the line."""
    return _refused_together(cwd, args)[0]


def _spec(folder: Path, text: str, name: str = "s.toml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["sweep", "--bogus"], "No such option: --bogus (Possible options: --base) (see "),
        (["--bogus"], "No such option: --bogus (see 'python -m looksam --help')"),
        (["bogus"], "No such command 'bogus'."),
    ],
)
def test_an_unknown_flag_or_command_is_one_line(
    args: list[str], needle: str, tmp_path: Path
) -> None:
    assert needle in _refused(tmp_path, *args)


@pytest.mark.slow
def test_refusals_before_any_store_exists(tmp_path: Path) -> None:
    """The cases that used to be refused only after a store, a run or a file existed."""
    # a batch no epoch of digits-noisy can fill (1257 training examples)
    big = _spec(
        tmp_path,
        '[sweep]\nname = "big"\n[workload]\nname = "digits-noisy"\ndevice = "cpu"\n'
        '[optimizers]\nnames = ["sgd"]\n[space.common]\nbatch_size = { choices = [100000] }\n',
        "big.toml",
    )
    # a name that cannot name a file
    long = _spec(
        tmp_path, f'[sweep]\nname = "{"x" * 300}"\n[workload]\ndevice = "cpu"\n', "long.toml"
    )
    batch, ftp, dead, name = _refused_together(
        tmp_path,
        ("sweep", str(big)),
        # a tracking URI MLflow cannot store runs at, and a server that does not answer
        ("sweep", str(QUICK), "--tracking-uri", "ftp://127.0.0.1/x"),
        ("sweep", str(QUICK), "--tracking-uri", "http://127.0.0.1:9/"),
        ("sweep", str(long)),
    )
    assert "sgd with batch_size=100000: batch size 100000 exceeds the 1257 training" in batch
    assert "tracking URI ftp://127.0.0.1/x: MLflow stores runs in" in ftp
    assert dead.startswith("error: MLflow tracking server http://127.0.0.1:9/ is not reachable: ")
    assert dead.endswith(": start it, or pass --tracking-uri or --no-mlflow")
    assert "name must be 1 to 100 printable characters" in name
    assert "got a 300-character name" in name


@pytest.mark.slow
@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("[fixed.sam]\nk = 5\n", "[fixed.sam]: sam takes no 'k'"),
        ('[optimizers]\nnames = ["sam", "sam"]\n', "names lists 'sam' 2 times"),
    ],
)
def test_nonsense_is_refused_not_dropped(spec: str, needle: str, tmp_path: Path) -> None:
    path = _spec(tmp_path, f'[sweep]\nname = "n"\n[workload]\ndevice = "cpu"\n{spec}')
    assert needle in _refused(tmp_path, "sweep", str(path))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ('{"tolerance": 0.1, "suites": []}', "suites is empty: a gate that measures nothing"),
        ("[1, 2]", "the file must be an object"),
    ],
)
def test_a_ci_gate_that_would_measure_nothing_is_refused(
    content: str, needle: str, tmp_path: Path
) -> None:
    baseline = tmp_path / "b.json"
    baseline.write_text(content)
    assert needle in _refused(tmp_path, "check", "--baseline", str(baseline))


@pytest.mark.slow
def test_a_store_damaged_in_the_middle_is_refused_and_left_untouched(tmp_path: Path) -> None:
    """40 kB of garbage in the middle of a real Optuna database, its header intact."""
    import optuna

    db = tmp_path / "optuna.db"
    storage = optuna.storages.RDBStorage(f"sqlite:///{db}")
    study = optuna.create_study(study_name="s", storage=storage)
    for i in range(200):
        study.enqueue_trial({"x": float(i)}, user_attrs={"pad": "y" * 500})
    storage.engine.dispose()
    data = bytearray(db.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 40_000] = os.urandom(min(40_000, len(data) - middle))
    db.write_bytes(bytes(data))
    line = _refused(tmp_path, "sweep", str(QUICK), "--storage", f"sqlite:///{db}", "--no-mlflow")
    assert f"Optuna storage {db} is damaged" in line


@pytest.mark.slow
def test_no_part_of_a_password_is_printed(tmp_path: Path) -> None:
    url = "postgresql://alice:p@ss/w0rd@127.0.0.1:1/db"
    line = _refused(tmp_path, "sweep", str(QUICK), "--storage", url, "--no-mlflow")
    assert "postgresql://***@127.0.0.1:1/db" in line
    for piece in ("alice", "p@ss", "w0rd", "'ss'", "ss/"):
        assert piece not in line


def test_the_baseline_cases_are_exercised_with_real_json(tmp_path: Path) -> None:
    """The helper itself: a refusal that creates a file is caught (the snapshot is not vacuous)."""
    (tmp_path / "a.txt").write_text("x")
    before = _snapshot(tmp_path)
    (tmp_path / "b.txt").write_text(json.dumps({}))
    assert _snapshot(tmp_path) != before
