"""looksam._plugins: importing plugins once, recording them for child processes, entry points,
and errors as one line naming the plugin and the cause."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from looksam import _plugins
from looksam._plugins import (
    ENV_VARIABLE,
    PluginError,
    load_entry_points,
    load_plugins,
    loaded_plugins,
    plugins_from_env,
)
from looksam.optim import list_optimizers
from looksam.sweeps.spec import SpecError, parse_spec

Writer = Callable[[str], str]


@pytest.fixture(autouse=True)
def _fresh_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing loaded yet and no LOOKSAM_PLUGINS, whatever ran before; sys.path restored."""
    monkeypatch.setattr(_plugins, "_loaded", set())
    monkeypatch.setattr(sys, "path", [*sys.path])
    # setenv first so the undo restores the variable as it was (absent too): loading a plugin
    # sets it, and a later test's subprocess would inherit a module that no longer exists.
    monkeypatch.setenv(ENV_VARIABLE, "")
    monkeypatch.delenv(ENV_VARIABLE)


@pytest.fixture
def write_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Writer]:
    """Write a uniquely named module on sys.path; ``{log}`` in its body is a file to append to."""
    folder = tmp_path / "modules"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    names: list[str] = []

    def write(body: str) -> str:
        name = f"plugin_{uuid.uuid4().hex[:10]}"
        (folder / f"{name}.py").write_text(body.replace("{log}", str(tmp_path / f"{name}.log")))
        names.append(name)
        return name

    yield write
    for name in names:
        sys.modules.pop(name, None)


def _imports(tmp_path: Path, name: str) -> int:
    log = tmp_path / f"{name}.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


COUNTING = 'open(r"{log}", "a").write("imported\\n")\n'


def test_a_plugin_is_imported_once_and_recorded_for_child_processes(
    write_module: Writer, tmp_path: Path
) -> None:
    first, second = write_module(COUNTING), write_module(COUNTING)
    assert load_plugins([first, f" {first} ", second]) == [first, second]
    assert load_plugins([second, first]) == []
    assert _imports(tmp_path, first) == _imports(tmp_path, second) == 1
    assert os.environ[ENV_VARIABLE] == os.pathsep.join([first, second])
    assert plugins_from_env() == [first, second]
    assert set(loaded_plugins()) == {first, second}


def test_record_false_leaves_the_environment_alone(write_module: Writer) -> None:
    assert load_plugins([write_module("")], record=False)
    assert ENV_VARIABLE not in os.environ


def test_the_environment_keeps_what_it_already_names(
    write_module: Writer, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = write_module("")
    monkeypatch.setenv(ENV_VARIABLE, os.pathsep.join(["", "other", name, " "]))
    assert plugins_from_env() == ["other", name]
    load_plugins([name])
    assert plugins_from_env() == ["other", name]  # not appended a second time


def test_a_module_in_the_current_directory_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"cwd_plugin_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{name}.py").write_text("VALUE = 1\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    try:
        assert load_plugins([name]) == [name]
    finally:
        sys.modules.pop(name, None)


@pytest.mark.parametrize("bad", ["plugins/my_opt", "", "  ", "a..b", "1abc", 3])
def test_a_name_that_is_not_a_module_path_is_refused(bad: object) -> None:
    with pytest.raises(PluginError, match="is not a module name"):
        load_plugins([bad])  # type: ignore[list-item]


def test_a_file_name_gets_the_module_name_as_a_hint() -> None:
    with pytest.raises(PluginError, match="give the module name 'my_opt'"):
        load_plugins(["my_opt.py"])


def test_a_missing_module_names_itself() -> None:
    with pytest.raises(PluginError) as caught:
        load_plugins(["surely_no_such_module_here"])
    message = str(caught.value)
    assert message.startswith("plugin 'surely_no_such_module_here': no module named")
    assert "PYTHONPATH" in message
    assert ENV_VARIABLE not in os.environ


def test_a_missing_dependency_of_the_plugin_is_not_taken_for_the_plugin(
    write_module: Writer,
) -> None:
    name = write_module("import surely_no_such_dependency\n")
    with pytest.raises(PluginError) as caught:
        load_plugins([name])
    message = str(caught.value)
    assert f"plugin {name!r} failed to import" in message
    assert "ModuleNotFoundError: No module named 'surely_no_such_dependency'" in message
    assert f"({name}.py:1)" in message


def test_an_error_inside_the_plugin_is_one_line_with_its_place(write_module: Writer) -> None:
    name = write_module('X = 1\nraise RuntimeError("no GPU\\nhere")\n')
    with pytest.raises(PluginError) as caught:
        load_plugins([name])
    message = str(caught.value)
    assert "\n" not in message
    assert message == f"plugin {name!r} failed to import: RuntimeError: no GPU here ({name}.py:2)"
    assert name not in _plugins._loaded


def test_a_syntax_error_names_file_and_line(write_module: Writer) -> None:
    name = write_module("def broken(:\n")
    with pytest.raises(PluginError, match=rf"SyntaxError: .*{name}\.py, line 1"):
        load_plugins([name])


def test_a_registration_the_registry_refuses_leaves_the_registry_alone(
    write_module: Writer,
) -> None:
    before = [info.name for info in list_optimizers()]
    name = write_module(
        "from looksam.optim import OptimizerInfo, get_optimizer_info, register_optimizer\n"
        "register_optimizer(OptimizerInfo(name='Bad Name', summary='x',\n"
        "    factory=get_optimizer_info('sgd').factory))\n"
    )
    with pytest.raises(PluginError, match=rf"ValueError: optimizer 'Bad Name'.*\({name}\.py:2\)"):
        load_plugins([name])
    assert [info.name for info in list_optimizers()] == before


# ---------------------------------------------------------------------- entry points


def _distribution(site: Path, entry_points: str, modules: dict[str, str]) -> None:
    dist_info = site / "mypkg-0.1.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: mypkg\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(entry_points)
    for name, body in modules.items():
        (site / f"{name}.py").write_text(body)


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on sys.path that plays an installed distribution's site-packages."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    before = set(sys.modules)
    yield folder
    for name in set(sys.modules) - before:
        if name.startswith("ep_"):
            del sys.modules[name]


def test_entry_points_are_loaded_once_and_functions_called(site: Path, tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    _distribution(
        site,
        "[looksam.optimizers]\n"
        "fn = ep_functions:register\n"
        "mod = ep_module\n"
        "cls = ep_functions:NotCalled\n"
        "[looksam.workloads]\n"
        "wl = ep_functions:register_workloads\n"
        "[some.other.group]\n"
        "other = ep_never:x\n",
        {
            "ep_functions": (
                f"LOG = {str(log)!r}\n"
                "def register():\n    open(LOG, 'a').write('optimizers\\n')\n"
                "def register_workloads():\n    open(LOG, 'a').write('workloads\\n')\n"
                "class NotCalled:\n"
                "    def __init__(self):\n        open(LOG, 'a').write('class\\n')\n"
            ),
            "ep_module": f"open({str(log)!r}, 'a').write('module\\n')\n",
        },
    )
    loaded = load_entry_points()
    assert loaded == [
        "ep_functions:register",
        "ep_module",
        "ep_functions:NotCalled",
        "ep_functions:register_workloads",
    ]
    assert load_entry_points() == []
    assert log.read_text().splitlines() == ["optimizers", "module", "workloads"]
    assert "ep_never" not in sys.modules
    assert ENV_VARIABLE not in os.environ  # children find installed entry points themselves
    assert load_plugins(["ep_module"]) == []  # the entry point imported it already
    assert log.read_text().splitlines() == ["optimizers", "module", "workloads"]


@pytest.mark.parametrize(
    ("value", "cause"),
    [
        ("ep_missing_module:register", "ModuleNotFoundError: No module named 'ep_missing_module'"),
        ("ep_raises:register", "ValueError: nope (ep_raises.py:2)"),
        ("ep_raises:absent", "AttributeError"),
    ],
)
def test_a_broken_entry_point_names_itself_and_its_distribution(
    site: Path, value: str, cause: str
) -> None:
    _distribution(
        site,
        f"[looksam.optimizers]\nbroken = {value}\n",
        {"ep_raises": "def register():\n    raise ValueError('nope')\n"},
    )
    with pytest.raises(PluginError) as caught:
        load_entry_points()
    message = str(caught.value)
    assert message.startswith(
        f"entry point 'broken' (looksam.optimizers = {value}) from mypkg 0.1: "
    )
    assert cause in message


# ---------------------------------------------------------------------- sweep specs


def test_a_spec_loads_its_plugins_and_records_them(write_module: Writer, tmp_path: Path) -> None:
    name = write_module(COUNTING)
    spec = parse_spec({"plugins": [name], "optimizers": {"names": ["sgd"]}}, "s.toml")
    assert spec.plugins == (name,)
    assert spec.to_dict()["plugins"] == (name,)
    assert _imports(tmp_path, name) == 1
    assert parse_spec({"optimizers": {"names": ["sgd"]}}).plugins == ()


@pytest.mark.parametrize(
    ("plugins", "message"),
    [
        (["surely_no_such_module_here"], "s.toml plugins: plugin 'surely_no_such_module_here'"),
        ("my_opt", "s.toml: plugins must be a list of module names"),
        ([1], "s.toml: plugins must be a list of module names"),
        (["my_opt.py"], "s.toml plugins: plugin 'my_opt.py' is a file name"),
    ],
)
def test_a_spec_with_bad_plugins_is_a_spec_error(plugins: object, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec({"plugins": plugins}, "s.toml")
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)
