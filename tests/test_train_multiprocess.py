"""`accelerate launch --num_processes 2` on CPU (gloo): the learning-rate schedule counts optimizer steps,
each rank draws its own data, and kill + resume with two processes ends where an uninterrupted run does."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from llgbm.artifacts.generator_files import load_generator
from llgbm.config import to_dict
from llgbm.data.tasks import save_tasks

from .conftest import micro_config

pytestmark = pytest.mark.e2e  # subprocess CLI, dvc repro or accelerate launch

LAUNCHER = Path(__file__).with_name("multiprocess_train.py")


def launch(inputs: dict, run: Path, stop: int | None = None) -> None:
    run.mkdir(parents=True, exist_ok=True)
    command = [str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
               str(LAUNCHER), str(inputs["params"]), str(inputs["tasks_file"]), str(inputs["root"]), str(run)]
    if stop is not None:
        command.append(str(stop))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-20000:]


@pytest.fixture(scope="module")
def two_process_runs(micro_train_inputs: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("multiprocess")
    inputs = {**micro_train_inputs, "params": root / "params.yaml", "tasks_file": root / "tasks.json"}
    inputs["params"].write_text(yaml.safe_dump(to_dict(micro_config())))
    save_tasks(micro_train_inputs["tasks"], inputs["tasks_file"])
    straight, resumed = root / "straight", root / "resumed"
    launch(inputs, straight)
    launch(inputs, resumed, stop=25)
    shutil.rmtree(resumed / "live")  # as DVC does before it reruns the stage
    launch(inputs, resumed)
    return {"straight": straight, "resumed": resumed}


def _column(run: Path, name: str) -> list[float]:
    with open(run / "live" / "plots" / "metrics" / f"{name}.tsv") as handle:
        return [float(row[name]) for row in csv.DictReader(handle, delimiter="\t")]


def test_learning_rate_follows_the_schedule_over_all_steps(two_process_runs) -> None:
    tr = micro_config().train
    expected = [tr.learning_rate * (s / tr.warmup_steps if s < tr.warmup_steps
                                    else (tr.steps - s) / (tr.steps - tr.warmup_steps)) for s in range(1, tr.steps + 1)]
    assert _column(two_process_runs["straight"], "learning_rate") == pytest.approx(expected, rel=1e-6, abs=1e-12)


def test_each_rank_draws_its_own_data(two_process_runs) -> None:
    draws = [[json.loads(line) for line in (two_process_runs["straight"] / f"draws-{rank}.jsonl").read_text().splitlines()]
             for rank in (0, 1)]
    assert len(draws[0]) == len(draws[1]) == micro_config().train.steps
    assert sum(a != b for a, b in zip(*draws)) >= 0.9 * len(draws[0])


def test_killed_and_resumed_two_process_run_ends_like_an_uninterrupted_one(two_process_runs) -> None:
    straight, resumed = two_process_runs["straight"], two_process_runs["resumed"]
    a, _ = load_generator(straight / "generator")
    b, _ = load_generator(resumed / "generator")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name
    assert _column(resumed, "loss_total") == _column(straight, "loss_total")
    # After the resume, each rank continued its own stream: the batches drawn after step 20 match.
    for rank in (0, 1):
        lines = lambda run: (run / f"draws-{rank}.jsonl").read_text().splitlines()  # noqa: E731
        assert lines(resumed)[25:] == lines(straight)[20:], rank
