"""User plugins: modules that register their own optimizers and workloads, loaded by name.

A plugin is an ordinary Python module that calls the public registries when it is imported
(:func:`looksam.optim.register_optimizer`, :func:`looksam.train.workloads.register_workload`).
looksam-bench imports it from any of three places:

* ``looksam-bench --plugin MODULE`` (repeatable), before the command;
* ``plugins = ["MODULE", ...]`` at the top of a sweep spec;
* the entry-point groups ``looksam.optimizers`` and ``looksam.workloads`` of installed
  distributions, all loaded once when the CLI starts.

``--plugin`` and the spec name modules, which register when imported. An entry point names a
module or an object in one (``package.module:name``): loading it imports the module, and when
the object is a function it is then called with no arguments (a module, a class or any other
object is only imported: the import is what registers). Each module and each entry point is
loaded once per process, however many of the three places name it, so nothing registers twice.

Every name loaded is also appended to the environment variable :data:`ENV_VARIABLE`
(``os.pathsep``-separated), and the CLI loads what that variable names when it starts: the
processes it launches itself (``--nproc`` under torchrun, scaling runs) inherit the variable
and so see the same optimizers and workloads.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import os
import sys
import sysconfig
import traceback
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

#: Plugins this process has loaded, ``os.pathsep``-separated; child processes load them too.
ENV_VARIABLE = "LOOKSAM_PLUGINS"
#: The entry-point groups whose entries the CLI loads at start.
ENTRY_POINT_GROUPS = ("looksam.optimizers", "looksam.workloads")

_LOOKSAM_DIR = Path(__file__).resolve().parent
_STDLIB_DIR = Path(sysconfig.get_paths()["stdlib"]).resolve()
#: Plugin modules and entry-point values already loaded in this process.
_loaded: set[str] = set()


class PluginError(RuntimeError):
    """A plugin that could not be loaded; the message is one line naming it and the cause."""


def plugins_from_env(environ: Mapping[str, str] | None = None) -> list[str]:
    """The plugin names :data:`ENV_VARIABLE` lists (empty entries skipped)."""
    value = (os.environ if environ is None else environ).get(ENV_VARIABLE, "")
    return [name.strip() for name in value.split(os.pathsep) if name.strip()]


def load_plugins(names: Sequence[str], *, record: bool = True) -> list[str]:
    """Import each plugin module once; the names newly loaded.

    Modules are looked up on ``sys.path`` plus the current directory (as ``python -m`` does).
    With ``record`` every name loaded is added to :data:`ENV_VARIABLE`, so that processes
    started from this one load it as well.

    Raises:
        PluginError: a name that is not a module path, or a module that is missing or raises
            while it is imported (a registration the registry refuses included). The plugins
            before it stay loaded.
    """
    loaded: list[str] = []
    for raw in names:
        name = _normalise(raw)
        if name in _loaded:
            continue
        _with_current_directory()
        _import(name)
        _loaded.add(name)
        loaded.append(name)
        if record:
            _record(name)
    return loaded


def load_entry_points(groups: Iterable[str] = ENTRY_POINT_GROUPS) -> list[str]:
    """Load every installed entry point of ``groups`` once; their values (``module[:object]``).

    An entry point's module is imported; if the object it names is a function, it is called
    with no arguments. The values are not added to :data:`ENV_VARIABLE`: child processes find
    the same installed entry points themselves.

    Raises:
        PluginError: naming the entry point, its distribution and the cause.
    """
    loaded: list[str] = []
    for group in groups:
        for entry in importlib.metadata.entry_points(group=group):
            name = "".join(entry.value.split())
            if name in _loaded:
                continue
            dist = getattr(entry, "dist", None)
            origin = f" from {dist.name} {dist.version}" if dist is not None else ""
            where = f"entry point {entry.name!r} ({group} = {entry.value}){origin}"
            try:
                target = entry.load()
            except Exception as error:  # any failure becomes one line
                raise PluginError(f"{where}: {_cause(error)}") from None
            _call(where, target)
            _loaded.add(name)
            loaded.append(name)
    return loaded


def loaded_plugins() -> list[str]:
    """Every plugin name and entry point loaded in this process so far (sorted)."""
    return sorted(_loaded)


# ---------------------------------------------------------------------- helpers


def _normalise(raw: object) -> str:
    """The module name, stripped; PluginError for anything that is not a dotted module path."""
    name = raw.strip() if isinstance(raw, str) else ""
    if name.endswith(".py") and all(part.isidentifier() for part in name.split(".")):
        raise PluginError(
            f"plugin {raw!r} is a file name: give the module name {name[:-3]!r}, with its folder "
            "on PYTHONPATH or as the current directory"
        )
    if not name or not all(part.isidentifier() for part in name.split(".")):
        raise PluginError(
            f"plugin {raw!r} is not a module name: give one like 'my_optimizers' or "
            "'package.module', importable from PYTHONPATH or the current directory"
        )
    return name


def _with_current_directory() -> None:
    """Make modules in the current directory importable, as ``python -m`` does."""
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())


def _import(name: str) -> None:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name is not None and (error.name == name or name.startswith(f"{error.name}.")):
            raise PluginError(
                f"plugin {name!r}: no module named {error.name!r} (put it on PYTHONPATH or "
                "install the package that provides it)"
            ) from None
        raise PluginError(f"plugin {name!r} failed to import: {_cause(error)}") from None
    except Exception as error:  # the plugin's own error, as one line
        raise PluginError(f"plugin {name!r} failed to import: {_cause(error)}") from None


def _call(where: str, target: object) -> None:
    """Call an entry point's registration function (modules, classes, objects are left alone)."""
    if not callable(target) or inspect.isclass(target):
        return
    try:
        target()
    except Exception as error:  # the function's own error, as one line
        raise PluginError(f"{where}: {_cause(error)}") from None


def _cause(error: BaseException) -> str:
    """``ValueError: message (my_opt.py:12)``: the error and the plugin line that raised it."""
    message = " ".join(str(error).split()) or "(no message)"
    text = f"{type(error).__name__}: {message}"
    if isinstance(error, SyntaxError):
        return text  # its message already names the file and line
    # The plugin's own line: the outermost frame outside looksam, importlib and the stdlib.
    for frame in traceback.extract_tb(error.__traceback__):
        if frame.filename.startswith("<"):
            continue  # frozen importlib, exec'd strings
        path = Path(frame.filename).resolve()
        if _LOOKSAM_DIR in path.parents:
            continue
        if _STDLIB_DIR in path.parents and not {"site-packages", "dist-packages"} & set(
            path.parts
        ):
            continue
        return f"{text} ({path.name}:{frame.lineno})"
    return text


def _record(name: str) -> None:
    names = plugins_from_env()
    if name not in names:
        os.environ[ENV_VARIABLE] = os.pathsep.join([*names, name])
