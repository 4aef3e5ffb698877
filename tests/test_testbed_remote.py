"""The study's testbed ships with the repository: a fresh clone pulls it from the DVC remote kept in git
(testbed-remote/) and DVC then finds every testbed stage up to date, its outputs the hashes dvc.lock names."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e  # git clone and dvc subprocesses

REPO = Path(__file__).resolve().parent.parent
# What every run of the study shares, as README's fresh-machine command pulls it.
TESTBED_STAGES = ["tasks", "split", "base", "teachers", "embed"]


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    return subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, env=env, timeout=900)


def test_readme_pulls_the_testbed_stages() -> None:
    commands = re.findall(r"dvc pull ([a-z ]+?) &&", (REPO / "README.md").read_text())
    assert commands and all(c.split() == TESTBED_STAGES for c in commands)


def test_a_fresh_clone_pulls_the_testbed_with_the_locked_hashes(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    cloned = _run("git", "clone", "--quiet", str(REPO), str(clone), cwd=tmp_path)
    assert cloned.returncode == 0, cloned.stderr
    pulled = _run(sys.executable, "-m", "dvc", "pull", *TESTBED_STAGES, cwd=clone)
    assert pulled.returncode == 0, pulled.stdout[-2000:] + pulled.stderr[-2000:]
    # The check stage's mark (not cached: a constant file) is what the tasks stage reads first.
    checked = _run(sys.executable, "-m", "dvc", "repro", "--single-item", "check", cwd=clone)
    assert checked.returncode == 0, checked.stderr[-2000:]
    status = _run(sys.executable, "-m", "dvc", "status", "--json", *TESTBED_STAGES, cwd=clone)
    assert status.returncode == 0, status.stderr[-2000:]
    assert json.loads(status.stdout) == {}, status.stdout  # nothing changed: outputs as locked, nothing reruns
    assert (clone / "models" / "base" / "config.json").is_file() and (clone / "models" / "teachers").is_dir()
