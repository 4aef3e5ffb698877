"""constraints.txt pins every library llgbm depends on to the study's version, and both of README's
commands for a fresh machine install through it: library versions are part of every run's key, so an
unpinned install reruns the whole pipeline under a new key instead of reusing the archived study."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r'^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+) ; python_version == "3\.11"$')
UNPINNED = {"torch"}  # README's first step installs it: the CPU build here, a CUDA build on a GPU machine


def _name(requirement: str) -> str:
    """A requirement's distribution name, normalised as PEP 503 does."""
    name = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip())
    assert name, requirement
    return re.sub(r"[-_.]+", "-", name.group(0)).lower()


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        match = PIN.match(line)
        assert match, f"constraints.txt: not an exact pin for Python 3.11: {line!r}"
        assert _name(match.group(1)) not in pins, f"constraints.txt: {match.group(1)} pinned twice"
        pins[_name(match.group(1))] = match.group(2)
    return pins


def test_every_dependency_is_pinned_but_torch() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    required = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    pins = _pins()
    missing = {_name(r) for r in required} - UNPINNED - set(pins)
    assert not missing, f"constraints.txt lacks {sorted(missing)}"
    assert not UNPINNED & set(pins)


def test_both_fresh_machine_commands_install_through_the_constraints() -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index("## Two commands for a fresh machine"):readme.index("\n## ", readme.index(
        "## Two commands for a fresh machine") + 1)]
    installs = [line for line in block.splitlines() if "pip install -e" in line or "pip install -c" in line]
    assert len(installs) == 2, installs
    assert all(".venv/bin/pip install -c constraints.txt -e " in line for line in installs), installs
