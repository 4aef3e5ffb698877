"""dvc.yaml lists, for every stage, each `llgbm` module its script runs, so that an edit to any of them
makes `dvc status` report the stage as changed; and every path it lists still exists (or is produced by
another stage)."""
from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from llgbm.infra.provenance import library_modules, module_file, script_modules

ROOT = Path(__file__).resolve().parents[1]

# Modules a stage may import without listing them in its deps, each with the reason its content cannot
# change a stage's outputs. Empty on purpose: config.py holds the defaults of every key params.yaml
# omits, io.py decides what is written and how, stage.py the output paths, errors.py only the error
# type, but listing one file costs nothing and keeps the rule free of judgement calls.
EXEMPT: dict[str, str] = {}  # "llgbm/x.py": "why it cannot change any output"


def transitive_modules(script: Path) -> set[Path]:
    """Every llgbm source file `script` runs, following imports inside the package (at any depth of a
    file: a lazy import runs too)."""
    return {ROOT / module_file(m) for m in script_modules(script)}


def _stages() -> dict[str, dict]:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _script(stage: dict) -> Path:
    scripts = [w for w in shlex.split(stage["cmd"]) if w.endswith(".py")]
    assert len(scripts) == 1, f"cmd '{stage['cmd']}' should run one Python script"
    return ROOT / scripts[0]


def _outs(stages: dict[str, dict]) -> set[str]:
    paths = set()
    for stage in stages.values():
        for out in stage.get("outs", []):
            paths.add(next(iter(out)) if isinstance(out, dict) else out)
    return paths


def test_transitive_imports_follow_relative_and_absolute_forms(tmp_path: Path) -> None:
    # The walker itself: a stage importing llgbm.infra.io reaches io.py's own imports; relative imports and
    # imports inside functions count.
    found = {p.name for p in transitive_modules(ROOT / "stages" / "tasks.py")}
    assert {"tasks.py", "stage.py", "config.py", "errors.py", "io.py"} <= found
    assert "llgbm.infra.provenance" in library_modules("llgbm.recipes.train")  # through train.py's relative imports


@pytest.mark.parametrize("name", sorted(_stages()))
def test_stage_deps_list_every_module_it_imports(name: str) -> None:
    stage = _stages()[name]
    script = _script(stage)
    deps = {str(d) for d in stage.get("deps", [])}
    needed = {script, *transitive_modules(script)}
    missing = sorted(str(p.relative_to(ROOT)) for p in needed
                     if str(p.relative_to(ROOT)) not in deps | set(EXEMPT))
    assert not missing, f"dvc.yaml stage '{name}' runs {', '.join(missing)} but does not list it under deps"


@pytest.mark.parametrize("name", sorted(_stages()))
def test_stage_deps_exist(name: str) -> None:
    stages = _stages()
    outs = _outs({k: v for k, v in stages.items() if k != name})
    tracked = set(subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                                 check=True).stdout.split())
    gone = []
    for dep in map(str, stages[name].get("deps", [])):
        produced = any(dep == out or dep.startswith(out.rstrip("/") + "/") for out in outs)
        on_disk = (ROOT / dep).exists() and (dep in tracked or any(t.startswith(dep + "/") for t in tracked))
        if not (produced or on_disk):
            gone.append(dep)
    assert not gone, f"dvc.yaml stage '{name}' lists deps that neither exist in git nor come from a stage: {gone}"


# Config sections a recipe reads that its stage need not declare under params, each with the reason a change
# to them still reruns it (or cannot change its outputs).
PARAMS_COVERED: dict[tuple[str, str], str] = {
    ("base", "seed"): "base.py's `cfg` there is the BaseConfig: cfg.seed is base.seed, declared as base",
    ("check", "*"): "the check stage depends on params.yaml itself: any edit reruns it",
    ("evaluate", "tasks"): "it reads the task pairs' names, which data/tasks.json (a dep, made from tasks) holds",
    ("embed", "tasks"): "with encoder.model factors, the pairs' parts, which data/tasks.json (a dep) holds",
}


@pytest.mark.parametrize("name", sorted(_stages()))
def test_stage_params_list_every_config_section_its_recipe_reads(name: str) -> None:
    # Only a recipe sees config sections: one it reads but dvc.yaml does not declare would not rerun the stage
    # when `dvc exp run -S` changes it (sft.records once trained nothing new).
    import dataclasses
    import re

    from llgbm.config import Config

    stage = _stages()[name]
    declared = [str(p) for p in stage.get("params") or []]
    sections = {f.name for f in dataclasses.fields(Config)}
    read = {m.group(1) for m in re.finditer(r"\bcfg\.(\w+)", (ROOT / "llgbm" / "recipes" / f"{name}.py").read_text())}
    undeclared = sorted(s for s in read & sections
                        if not any(d == s or d.startswith(f"{s}.") for d in declared)
                        and (name, s) not in PARAMS_COVERED and (name, "*") not in PARAMS_COVERED)
    assert not undeclared, f"dvc.yaml stage '{name}' reads {', '.join(undeclared)} but does not list it under params"
