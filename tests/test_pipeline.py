"""The stages end to end through `dvc repro`, in a temporary git + DVC repository, on the micro config."""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from llgbm.config import to_dict

from .conftest import micro_config

pytestmark = pytest.mark.e2e  # subprocess CLI, dvc repro or accelerate launch

REPO = Path(__file__).resolve().parents[1]


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(cwd.parent / "dvc-site-cache"),
           "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com",
           "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.com"}
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pipeline") / "project"
    root.mkdir()
    shutil.copytree(REPO / "stages", root / "stages")
    shutil.copytree(REPO / "llgbm", root / "llgbm", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    shutil.copytree(REPO / "data" / "tasks", root / "data" / "tasks")  # a dep of the check and tasks stages
    (root / "params.yaml").write_text(yaml.safe_dump(to_dict(micro_config()), sort_keys=False))
    run(["git", "init", "-q"], root)
    run(["dvc", "init", "-q"], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "micro project"], root)
    run(["dvc", "repro"], root)
    return root


def test_repro_builds_every_output(project: Path) -> None:
    for path in ("data/tasks.json", "models/base/config.json", "models/teachers/index.json",
                 "cache/deltas/manifest.json", "cache/deltas/probes.json", "cache/deltas/base_state.safetensors",
                 "results/diagnostics/metrics.json", "models/diagnostics/multitask/adapter_config.json"):
        assert (project / path).is_file(), path
    metrics = json.loads(run(["dvc", "metrics", "show", "--json"], project).stdout)
    shown = json.dumps(metrics)
    assert "teacher_accuracy_min" in shown and "base_accuracy_max_distance_from_chance" in shown
    manifest = json.loads((project / "cache/deltas/manifest.json").read_text())
    assert len(manifest["entries"]) == 6


def test_second_repro_runs_nothing(project: Path) -> None:
    assert "up to date" in run(["dvc", "status"], project).stdout
    assert "Running stage" not in run(["dvc", "repro"], project).stdout


def test_probe_count_reruns_deltas_only(project: Path) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["probe_count"] = 3
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run(["dvc", "repro"], project).stdout
    assert "Running stage 'deltas'" in out
    for stage in ("tasks", "base", "teachers"):
        assert f"Running stage '{stage}'" not in out
    assert json.loads((project / "results/deltas/metrics.json").read_text())["probes"] == 3


def test_unknown_params_key_fails_in_one_line(project: Path) -> None:
    params_text = (project / "params.yaml").read_text()
    try:
        (project / "params.yaml").write_text(params_text + "lambda_dleta: 2.0\n")
        result = run([sys.executable, "stages/tasks.py"], project, check=False)
    finally:
        (project / "params.yaml").write_text(params_text)
    assert result.returncode != 0
    assert result.stderr.strip() == "error: params.yaml: unknown key 'lambda_dleta' (did you mean 'lambda_delta'?)"


def test_corrupt_input_leaves_outputs_untouched(project: Path) -> None:
    tasks_file = project / "data/tasks.json"
    good = tasks_file.read_text()
    before = sorted(p.name for p in (project / "models/base").iterdir())
    try:
        tasks_file.write_text("{broken")
        result = run([sys.executable, "stages/base.py"], project, check=False)
    finally:
        tasks_file.write_text(good)
    assert result.returncode != 0
    assert result.stderr.strip().startswith("error: data/tasks.json: tasks file is not valid JSON")
    assert sorted(p.name for p in (project / "models/base").iterdir()) == before
    assert not list((project / "models").glob(".*.tmp"))


def _tsv_rows(project: Path, name: str) -> list[tuple[int, float]]:
    with open(project / "results/train/plots/metrics" / f"{name}.tsv") as handle:
        return [(int(row["step"]), float(row[name])) for row in csv.DictReader(handle, delimiter="\t")]


def test_killed_repro_resumes_with_every_step_logged_once(project: Path) -> None:
    params_text = (project / "params.yaml").read_text()
    params = yaml.safe_load(params_text)
    params["train"].update(steps=120, save_interval=20)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        killed = subprocess.Popen(["dvc", "repro", "train"], cwd=project, env=env, start_new_session=True,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        checkpoint = project / "checkpoints/train/step-000040.pt"
        deadline = time.monotonic() + 300
        while not checkpoint.exists() and killed.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait()
        assert checkpoint.exists() and not (project / "models/generator").exists(), "killed too late"
        resumed = run(["dvc", "repro", "train"], project).stdout
        assert "resuming at step" in resumed
        resumed_rows = _tsv_rows(project, "loss_total")
        resumed_bytes = (project / "models/generator/generator.safetensors").read_bytes()
        assert not list((project / "checkpoints/train").glob("*.pt"))  # nothing left to resume by mistake
        straight = run(["dvc", "repro", "--force", "--single-item", "train"], project).stdout
        assert "resuming" not in straight
    finally:
        (project / "params.yaml").write_text(params_text)
    assert [step for step, _ in resumed_rows] == list(range(1, 121))
    assert resumed_rows == _tsv_rows(project, "loss_total")
    assert resumed_bytes == (project / "models/generator/generator.safetensors").read_bytes()


def test_queued_experiments_differ_in_lambda(project: Path) -> None:
    """Upstream stages committed first; two queued runs differing in lambda_delta retrain only the generator."""
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "pipeline outputs"], project)
    for value in ("0.0", "1.0"):
        run(["dvc", "exp", "run", "--queue", "-S", f"lambda_delta={value}", "-n", f"lambda-{value.replace('.', '-')}"],
            project)
    out = run(["dvc", "exp", "run", "--run-all", "-j", "1"], project)
    assert "Running stage 'teachers'" not in out.stdout
    shown = json.loads(run(["dvc", "exp", "show", "--json"], project).stdout)
    found = {}
    for baseline in shown:
        for group in baseline.get("experiments") or []:
            for rev in group.get("revs", []):
                data = rev["data"]
                params = data["params"]["params.yaml"]["data"]
                metrics = data["metrics"]["results/evaluate/metrics.json"]["data"]
                found[rev["name"]] = (params["lambda_delta"], metrics)
    assert {"lambda-0-0", "lambda-1-0"} <= set(found)
    assert found["lambda-0-0"][0] == 0.0 and found["lambda-1-0"][0] == 1.0
    assert found["lambda-0-0"][1] != found["lambda-1-0"][1]
    report = run([sys.executable, "-m", "llgbm.cli", "compare", "--record"], project).stdout
    assert "| weight-only |" in report and "| delta |" in report and "| reference | reference |" in report
    assert "recorded 2 new runs in results/study/runs.json (2 in all)" in report
    archive = json.loads((project / "results/study/runs.json").read_text())
    assert sorted(r["name"] for r in archive["runs"]) == ["lambda-0-0", "lambda-1-0"]
    (key,) = {r["key"] for r in archive["runs"]}  # the two arms share everything but their knob
    assert f"Runs of key `{key}`: 2 of the 2 (finished or failed) read" in report
    assert "CPUs, torch" in archive["runs"][0]["machine"]
    again = run([sys.executable, "-m", "llgbm.cli", "compare", "--record"], project).stdout
    assert "recorded 0 new runs" in again
    # A fresh clone has no experiments, only the archive: the same table comes back from it.
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "the run archive"], project)
    clone = project.parent / "clone"
    run(["git", "clone", "-q", str(project), str(clone)], project.parent)
    from_clone = run([sys.executable, "-m", "llgbm.cli", "compare"], clone).stdout
    table = [line for line in report.splitlines() if line.startswith("| ")]
    assert [line for line in from_clone.splitlines() if line.startswith("| ")] == table
