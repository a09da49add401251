"""The rooms and their floors: what each subpackage may import, and what it shows the world.

Floors, lowest first (a module imports from its own room or a lower floor):

0. ``optim``, ``stats`` and the private helpers (``_json``, ``_markdown``, ``_plugins``,
   ``_lazy``);
1. ``train`` (the training loop) and ``reports`` (pure renderers);
2. ``bench`` (measuring tools) and ``diagnose`` (the paper's experiment and its page);
3. ``sweeps``;
4. ``cli`` (and ``__main__`` above it).
"""

from __future__ import annotations

import ast
import importlib
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import looksam

PACKAGE = Path(looksam.__file__).parent
FLOORS = {
    "optim": 0,
    "stats": 0,
    "_json": 0,
    "_markdown": 0,
    "_plugins": 0,
    "_lazy": 0,
    "train": 1,
    "reports": 1,
    "bench": 2,
    "diagnose": 2,
    "sweeps": 3,
    "cli": 4,
    "__main__": 5,  # python -m looksam: the CLI's door
}
#: Kept for one release: the old home of the workloads re-exports the new one (floor 1).
MOVED = {"looksam.bench.workloads": "looksam.train.workloads"}
SUBPACKAGES = ("looksam.train", "looksam.bench", "looksam.diagnose", "looksam.sweeps")


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path) -> set[str]:
    """Every ``looksam.*`` module a file imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("looksam.")}


def _modules() -> list[tuple[str, Path]]:
    modules = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(relative.parts).removesuffix(".__init__")
        if name != "looksam":
            modules.append((name, path))
    return modules


def test_every_module_lives_in_a_room_with_a_floor() -> None:
    assert {_room(name) for name, _ in _modules()} <= set(FLOORS)


def _climbs(room: str, target: str) -> bool:
    """Up a floor, or sideways into another room of the same floor (rooms on one floor are
    independent: that is what keeps the renderers free of the training loop)."""
    return FLOORS[target] > FLOORS[room] or (FLOORS[target] == FLOORS[room] and target != room)


def _upward(modules: list[tuple[str, Path]]) -> list[str]:
    """``importer → imported`` for every import that climbs to a higher floor."""
    upward = []
    for name, path in modules:
        if name in MOVED:
            continue
        room = _room(name)
        upward += [f"{name} → {t}" for t in sorted(_imports(path)) if _climbs(room, _room(t))]
    return upward


def test_nothing_imports_from_a_higher_floor() -> None:
    assert _upward(_modules()) == []


def test_the_floor_check_catches_a_renderer_that_imports_the_training_loop(tmp_path: Path) -> None:
    planted = tmp_path / "bad.py"
    planted.write_text("def f():\n    from looksam.train.runner import RunConfig\n")
    sideways = tmp_path / "fine.py"
    sideways.write_text("from looksam.reports.model import SweepData\nimport looksam.optim\n")
    modules = [("looksam.reports.bad", planted), ("looksam.reports.fine", sideways)]
    assert _upward(modules) == ["looksam.reports.bad → looksam.train.runner"]


def _loaded_after(statement: str) -> list[str]:
    probe = (
        f"import sys\n{statement}\nimport json\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('optuna', 'mlflow') or m.startswith(('looksam.train', 'looksam.bench', "
        "'looksam.sweeps', 'looksam.diagnose')))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def _renderers() -> list[str]:
    import looksam.reports

    names = [f"looksam.reports.{m.name}" for m in pkgutil.iter_modules(looksam.reports.__path__)]
    return ["looksam.reports", *names]


def test_importing_the_reports_loads_no_training_loop_tracking_or_sweeps() -> None:
    """A notebook that renders a saved sweep pays for no training loop, Optuna or MLflow."""
    statement = "\n".join(f"import {name}" for name in _renderers())
    assert _loaded_after(statement) == []


def test_the_fresh_interpreter_probe_sees_a_heavy_import() -> None:
    assert "looksam.train.runner" in _loaded_after("import looksam.train.runner")


@pytest.mark.parametrize("package", [*SUBPACKAGES, "looksam.reports", "looksam.optim", "looksam"])
def test_every_name_a_room_lists_in_all_is_importable_from_it(package: str) -> None:
    module = importlib.import_module(package)
    assert module.__all__, package
    missing = [name for name in module.__all__ if getattr(module, name, None) is None]
    assert not missing, f"{package} lists but lacks {missing}"


def test_a_lazy_room_refuses_a_name_it_does_not_list() -> None:
    import looksam.sweeps

    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        looksam.sweeps.nothing_here  # noqa: B018


def test_the_old_workloads_path_warns_once_naming_the_new_one_and_still_works() -> None:
    probe = (
        "import warnings\n"
        "with warnings.catch_warnings(record=True) as seen:\n"
        "    warnings.simplefilter('always')\n"
        "    import looksam.bench.workloads as old\n"
        "    import looksam.bench.workloads as again\n"
        "import looksam.train.workloads as new\n"
        "from looksam.bench.workloads.custom import custom_workload as deep\n"
        "import looksam.bench.workloads.timm_models, looksam.train.workloads.timm_models as t\n"
        "assert deep is new.custom_workload and looksam.bench.workloads.timm_models is t\n"
        "print(len(seen), seen[0].category.__name__, str(seen[0].message))\n"
        "print(all(getattr(old, n) is getattr(new, n) for n in new.__all__), old.custom_workload)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    first, second = done.stdout.strip().splitlines()
    assert first.startswith("1 FutureWarning ")
    assert "looksam.train.workloads" in first
    assert second.startswith("True <function custom_workload")
