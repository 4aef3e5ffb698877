"""README's "Your own tasks" as a new user runs it: the example task files, copied from examples/tasks/ into
data/tasks/ by README's own `cp` line, through `dvc repro` in a fresh repository, with the params block README
gives (plus fewer steps), and the checks that run first."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from .conftest import MICRO_PARAMS
from .test_pipeline import REPO, run

EXAMPLES = ["color_first.jsonl", "color_second.jsonl", "color_third.jsonl", "color_last.jsonl"]

# Only sizes and step counts: what the README block sets is left as it says.
FEWER_STEPS = {key: MICRO_PARAMS[key] for key in ("lora", "generator", "train")}
FEWER_STEPS["base"] = {"tiny": MICRO_PARAMS["base"]["tiny"], "pretrain_steps": 20}
FEWER_STEPS["teachers"] = {**MICRO_PARAMS["teachers"], "min_accuracy": 0.9}  # the default bar: some will miss it
FEWER_STEPS["diagnostics"] = MICRO_PARAMS["diagnostics"]


def readme_block() -> dict:
    text = (REPO / "README.md").read_text()
    block = re.search(r"<!-- own-tasks -->\n```yaml\n(.*?)```\n<!-- /own-tasks -->", text, re.S)
    assert block, "README.md has no own-tasks block"
    return yaml.safe_load(block.group(1))


def readme_copy_line() -> str:
    """The own-tasks section's command that copies the shipped example into data/tasks/."""
    section = (REPO / "README.md").read_text().split("## Your own tasks", 1)[1].split("\n## ", 1)[0]
    lines = [line.strip("` ") for line in re.findall(r"`cp [^`]+`", section)]
    assert len(lines) == 1, lines
    return lines[0]


def test_the_shipped_example_lives_outside_the_users_folder() -> None:
    # A user's own color_first.jsonl must not replace a shipped file, nor a shipped file linger beside theirs:
    # git ships data/tasks/ with a placeholder only (what a user copies there is theirs).
    tracked = subprocess.run(["git", "ls-files", "data/tasks", "examples/tasks"], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout.split()
    assert tracked == ["data/tasks/README.md", *sorted(f"examples/tasks/{name}" for name in EXAMPLES)], tracked
    assert readme_block()["tasks"]["files"] == EXAMPLES
    assert readme_copy_line() == "cp examples/tasks/color_*.jsonl data/tasks/"
    assert "examples" not in (REPO / "dvc.yaml").read_text()  # the default pipeline never reads examples/


def merged(base: dict, *overrides: dict) -> dict:
    out = dict(base)
    for override in overrides:
        for key, value in override.items():
            out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    root = tmp_path_factory.mktemp("own-tasks") / "project"
    root.mkdir()
    for folder in ("stages", "llgbm"):
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    shutil.copytree(REPO / "data" / "tasks", root / "data" / "tasks")
    shutil.copytree(REPO / "examples", root / "examples")
    run(["bash", "-c", readme_copy_line()], root)
    params = merged(yaml.safe_load((REPO / "params.yaml").read_text()), readme_block(), FEWER_STEPS)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], root)
    run(["dvc", "init", "-q"], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "own tasks"], root)
    result = run(["dvc", "repro"], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "repro"], root)
    return root, result


@pytest.mark.e2e
def test_the_example_runs_end_to_end_with_pictures(project) -> None:
    root, result = project
    assert (root / "results" / "evaluate" / "metrics.json").is_file()
    for picture in ("results/train/curves.png", "results/evaluate/accuracy.png"):
        assert (root / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", picture
    tasks = [t["name"] for t in yaml.safe_load((root / "data" / "tasks.json").read_text())["tasks"]]
    assert tasks == ["color_first", "color_second", "color_third", "color_last"]
    # With so few steps some teachers miss the default bar: the stage names them and keeps every teacher.
    assert json.loads((root / "results" / "teachers" / "metrics.json").read_text())["teacher_accuracy_min"] < 0.9
    assert "warning: teachers:" in result.stdout + result.stderr and "kept (teachers.below_bar: warn)" in (
        result.stdout + result.stderr)


@pytest.mark.e2e
def test_a_misspelt_key_fails_the_experiment_at_the_check(project) -> None:
    root, _ = project
    result = run(["dvc", "exp", "run", "-S", "+lamda_delta=2"], root, check=False)
    run(["git", "checkout", "params.yaml"], root)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "error: params.yaml: unknown key 'lamda_delta' (did you mean 'lambda_delta'?)" in output
    assert re.findall(r"Running stage '(\w+)'", output) == ["check"]


@pytest.mark.e2e
def test_an_unknown_heldout_name_fails_before_the_base_stage_and_lists_the_tasks(project) -> None:
    root, _ = project
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["heldout_tasks"], params["base"]["seed"] = ["color_fifth"], 1  # the base would rerun
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = run(["dvc", "repro"], root, check=False)
    run(["git", "checkout", "params.yaml"], root)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and re.findall(r"Running stage '(\w+)'", output) == ["check"]
    assert "heldout_tasks: ['color_fifth'] are not tasks of the tasks file" in output
    assert "color_first, color_second, color_third, color_last" in output


@pytest.mark.e2e
def test_editing_a_task_file_reruns_the_tasks_stage(project) -> None:
    root, _ = project
    path = root / "data" / "tasks" / "color_first.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:100]))
    try:
        status = run(["dvc", "status"], root).stdout
    finally:
        run(["git", "checkout", str(path.relative_to(root))], root)
    assert re.search(r"^tasks:\n(\s+.*\n)*?\s+modified:\s+data/tasks", status, re.M), status
