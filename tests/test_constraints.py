"""constraints.txt pins every library llgbm depends on to the study's version, and both of README's
commands for a fresh machine install through it: library versions are part of every run's key, so an
unpinned install reruns the whole pipeline under a new key instead of reusing the archived study."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r'^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+) ; python_version == "3\.11"$')
UNPINNED = {"torch"}  # README's first step installs it: the CPU build here, a CUDA build on a GPU machine


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        match = PIN.match(line)
        assert match, f"constraints.txt: not an exact pin for Python 3.11: {line!r}"
        name = canonicalize_name(match.group(1))
        assert name not in pins, f"constraints.txt: {match.group(1)} pinned twice"
        pins[name] = match.group(2)
    return pins


def test_every_dependency_is_pinned_but_torch() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    required = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    pins = _pins()
    missing = {canonicalize_name(Requirement(r).name) for r in required} - UNPINNED - set(pins)
    assert not missing, f"constraints.txt lacks {sorted(missing)}"
    assert not UNPINNED & set(pins)


def test_both_fresh_machine_commands_install_through_the_constraints() -> None:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("## Two commands for a fresh machine")
    block = readme[start:readme.index("\n## ", start)]
    installs = [line for line in block.splitlines() if "pip install -e" in line or "pip install -c" in line]
    assert len(installs) == 2, installs
    assert all(".venv/bin/pip install -c constraints.txt -e " in line for line in installs), installs
