"""dvc.yaml lists, for every stage, each `llgbm` module its script runs, so that an edit to any of them
makes `dvc status` report the stage as changed; and every path it lists still exists (or is produced by
another stage)."""
from __future__ import annotations

import ast
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "llgbm"

# Modules a stage may import without listing them in its deps, each with the reason its content cannot
# change a stage's outputs. Empty on purpose: config.py holds the defaults of every key params.yaml
# omits, io.py decides what is written and how, stage.py the output paths, errors.py only the error
# type, but listing one file costs nothing and keeps the rule free of judgement calls.
EXEMPT: dict[str, str] = {}  # "llgbm/x.py": "why it cannot change any output"


def _module_file(name: str) -> Path | None:
    """llgbm/x.py for the dotted module name 'llgbm.x' (None outside the package)."""
    parts = name.split(".")
    if parts[0] != PACKAGE or len(parts) < 2:
        return None
    path = ROOT.joinpath(*parts).with_suffix(".py")
    return path if path.is_file() else None


def _imported_modules(path: Path) -> set[str]:
    """Dotted names of the llgbm modules `path` imports anywhere in its body (top level or inside a
    function: a lazy import runs too)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            names.add(module)
            # `from llgbm import x` / `from . import x` name modules in the import list
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return {n for n in names if _module_file(n) is not None}


def transitive_modules(script: Path) -> set[Path]:
    """Every llgbm source file `script` runs, following imports inside the package."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        for name in _imported_modules(todo.pop()):
            path = _module_file(name)
            if path is not None and path not in seen:
                seen.add(path)
                todo.append(path)
    return seen


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
    # The walker itself: a stage importing llgbm.io reaches io.py's own imports; relative imports and
    # imports inside functions count.
    found = {p.name for p in transitive_modules(ROOT / "stages" / "tasks.py")}
    assert {"tasks.py", "stage.py", "config.py", "errors.py", "io.py"} <= found
    lazy = {p.name for p in transitive_modules(ROOT / "llgbm" / "cli.py")}
    assert "generate.py" in lazy  # imported inside _generate()


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
