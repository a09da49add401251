"""The declared lower bounds are releases the suite runs on, so none of them is an untested claim.

``pip install -c constraints.txt`` (``make install``, ``.ci/run``) installs the pinned releases;
``make test-min`` installs the oldest ones that ``constraints-min.txt`` pins (torch, torchvision,
timm: a user's CUDA image keeps its own torch). A bound is the minor release of the oldest pin that
a target tests: below it would promise support nobody has run, above it would refuse an install
that works.
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


def _pins(name: str = "constraints.txt") -> dict[str, str]:
    pins = {}
    for line in (ROOT / name).read_text().splitlines():
        name, sep, version = line.split("#")[0].strip().partition("==")
        if sep:
            pins[_key(name)] = version.strip()
    return pins


@pytest.mark.parametrize(("name", "bound"), _declared(), ids=lambda v: str(v))
def test_each_lower_bound_is_the_minor_release_of_the_oldest_tested_pin(
    name: str, bound: str
) -> None:
    pinned = _pins().get(name)
    assert pinned is not None, f"{name} is declared but constraints.txt does not pin it"
    oldest = _pins("constraints-min.txt").get(name, pinned)
    assert _version(pinned) >= _version(oldest), f"{name}: CI's {pinned} is below {oldest}"
    assert _version(oldest) >= _version(bound), f"{name}: tested {oldest} is below {bound}"
    assert _version(oldest)[:2] == _version(bound)[:2], (
        f"{name}>={bound} but the oldest release tested is {oldest}: the bound is that minor"
    )


def test_torch_admits_the_version_on_common_cuda_images() -> None:
    """pip must keep a user's CUDA torch 2.11 rather than replace it with a multi-GB download."""
    bounds = dict(_declared())
    assert _version(bounds["torch"]) <= (2, 11)
    assert _pins("constraints-min.txt")["torch"] == "2.11.0"
