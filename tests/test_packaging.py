"""The declared lower bounds are the releases CI installs, so none of them is an untested claim.

``pip install -c constraints.txt`` (``make install``, ``.ci/run``) installs the pinned releases;
a bound below the pin's minor release would promise support nobody has run.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_BOUND = re.compile(r"^([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?>=([0-9][0-9.]*)")


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def _declared() -> list[tuple[str, str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements += extra
    bounds = []
    for requirement in requirements:
        match = _BOUND.match(requirement.replace(" ", ""))
        assert match, f"{requirement!r} declares no lower bound"
        bounds.append((_key(match.group(1)), match.group(2)))
    return bounds


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        name, sep, version = line.split("#")[0].strip().partition("==")
        if sep:
            pins[_key(name)] = version.strip()
    return pins


@pytest.mark.parametrize(("name", "bound"), _declared(), ids=lambda v: str(v))
def test_each_lower_bound_is_the_minor_release_ci_installs(name: str, bound: str) -> None:
    pinned = _pins().get(name)
    assert pinned is not None, f"{name} is declared but constraints.txt does not pin it"
    assert _version(pinned) >= _version(bound), f"{name}: pinned {pinned} is below {bound}"
    assert _version(pinned)[:2] == _version(bound)[:2], (
        f"{name}>={bound} but CI tests {pinned}: raise the bound to the tested minor release"
    )
