"""scripts/gpu-check: its CPU mode runs every stage and the bench (CI covers the script a GPU session runs)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from llgbm.config import config_from_dict
from llgbm.gpu_check import MEASURED_STAGES, MODE_SETTINGS, check_params

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "gpu-check"


@pytest.mark.parametrize("mode", sorted(MODE_SETTINGS))
def test_the_check_params_are_valid_and_small(mode: str) -> None:
    raw = check_params(yaml.safe_load((REPO / "params.yaml").read_text()), mode)
    cfg = config_from_dict(raw, "gpu-check params")
    assert cfg.train.steps == MODE_SETTINGS[mode]["train_steps"] and cfg.lora.rank == MODE_SETTINGS[mode]["rank"]
    assert len(cfg.tasks.selectors) * len(cfg.tasks.transforms) <= 6
    if mode == "gpu":  # Qwen2.5-0.5B's decoder
        assert (cfg.base.tiny.hidden_size, cfg.base.tiny.num_layers, cfg.base.tiny.intermediate_size) == (896, 24, 4864)


def _run(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=900)


@pytest.mark.e2e  # a subprocess (the script itself)
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_gpu_mode_without_cuda_says_so(tmp_path: Path) -> None:
    result = _run("--mode", "gpu", "--out", tmp_path / "r.json", cwd=tmp_path)
    assert result.returncode != 0 and "needs CUDA" in result.stderr and not (tmp_path / "r.json").exists()


@pytest.mark.e2e  # a subprocess (the script itself)
def test_a_folder_prepared_for_another_mode_is_refused(tmp_path: Path) -> None:
    (tmp_path / "prep").mkdir()
    (tmp_path / "prep" / "prepared.json").write_text(json.dumps({"mode": "gpu"}))
    result = _run("--mode", "cpu", "--prepared", tmp_path / "prep", cwd=tmp_path)
    assert result.returncode != 0 and "prepared for --mode gpu" in result.stderr


@pytest.mark.e2e
def test_cpu_mode_prepared_then_run_completes_every_stage(tmp_path: Path) -> None:
    prepared = tmp_path / "prepared"
    made = _run("--mode", "cpu", "--prepare", prepared, cwd=tmp_path)
    assert made.returncode == 0, made.stderr[-2000:]
    assert (prepared / "cache" / "embeddings").is_dir() and (prepared / "data" / "split.json").is_file()
    result_file = tmp_path / "out" / "gpu-check.json"
    ran = _run("--mode", "cpu", "--prepared", prepared, "--out", result_file, "--bench-repeats", "1", cwd=tmp_path)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    result = json.loads(result_file.read_text())
    assert result["failed"] is None and result["mode"] == "cpu"
    assert [s["stage"] for s in result["stages"]] == list(MEASURED_STAGES)
    assert all(s["seconds"] > 0 and s["peak_gib"] is None for s in result["stages"])
    assert result["train_steps_per_second_with_setup"] > 0
    assert 0.0 <= result["evaluate_metrics"]["generated"] <= 1.0
    [bench] = result["bench_delta"]
    assert bench["cases"] and bench["machine"]["device"] == "cpu" and bench["largest_fitting_adapters"] is None
    assert not (tmp_path / "models").exists()  # the stages ran in a scratch folder, not where it was started
