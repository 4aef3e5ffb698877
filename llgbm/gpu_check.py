"""`scripts/gpu-check`: the one prepared command of a GPU session (and its CPU mode, which CI runs).

It runs the real stages end to end on a few tasks and steps (base -> teachers -> deltas -> train ->
evaluate; tasks, split and embed before them), then `llgbm bench delta`, and writes one JSON file: per
stage wall seconds and peak GPU memory, training steps per second, the bench's JSON, the machine and the
commit. A stage that fails is written down with its error and ends the check (non-zero exit).

Modes:
- gpu: a base with Qwen2.5-0.5B's decoder shape over the tiny vocabulary, untrained (the check times the
  path; accuracy is not its question), LoRA rank 8, bf16 on the GPU; the bench at the 0.5B and 1.5B shapes.
- cpu: the embedded default's tiny shape, fp32; the bench at the tiny shape.

The GPU machine has no encoder package, no dvclive and reaches no registry. So, on a CPU machine first:
`--prepare DIR` runs tasks, split and embed into DIR, and `--download-wheels WHEELS` fetches dvclive and
what it needs; carry both, then run `scripts/gpu-check --prepared DIR --wheels WHEELS` there.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable

import torch
import yaml

from llgbm.bench.delta import QWEN25_05B, bench_delta
from llgbm.config import Config, config_from_dict, load_config
from llgbm.infra.io import write_json_atomic

PREPARED_STAGES = ("tasks", "split", "embed")  # CPU-only inputs (the encoder package is not on the GPU image)
MEASURED_STAGES = ("base", "teachers", "deltas", "train", "evaluate")
PARAMS_FILE = "params.yaml"

# Check sizes: a few tasks and steps, enough to run every code path of every stage once.
CHECK_TASKS = {"family": "compositional", "selectors": ["smallest", "largest"],
               "transforms": ["plus_one", "minus_one", "mirror"], "train_per_task": 64, "test_per_task": 32}
CHECK_HELDOUT = ["smallest_mirror"]  # its selector and transform occur in training
# bench: (model shape, adapter counts, with the PEFT column) runs of `llgbm bench delta`, at probes x
# probe_length tokens per adapter (None: the bench's default for the shape); the goals are 0.5B at
# 8 and 1.5B at 16 adapters. PEFT at 1.5B (a fresh PEFT model per adapter, about 8 s per 16) is left out
# to keep the check within 8 minutes.
MODE_SETTINGS = {
    "gpu": {"train_steps": 100, "teacher_steps": 40, "rank": 8, "device": "cuda", "bench_dtype": "bfloat16",
            "bench": [("qwen2.5-0.5b", [8], True), ("qwen2.5-1.5b", [16], False)], "probes": 8,
            "probe_length": 128, "fit_limit": 128, "bench_repeats": 2},
    "cpu": {"train_steps": 20, "teacher_steps": 20, "rank": 4, "device": "cpu", "bench_dtype": "float32",
            "bench": [("embedded-default", [2], True)], "probes": None, "probe_length": None, "fit_limit": 0,
            "bench_repeats": 1},
}
PREPARED_MARK = "prepared.json"  # the mode a prepared folder was made for
# What the stages import that the GPU image lacks (module: requirement; versions from constraints.txt).
# antlr4-python3-runtime (dvc's) publishes no wheel, so `--download-wheels` builds one.
IMAGE_LACKS = {"dvclive": "dvclive"}
SDIST_ONLY = ("antlr4-python3-runtime",)


def check_params(repo_params: dict, mode: str) -> dict:
    """The check's params: the repository's, with a few tasks and steps; in gpu mode the base has
    Qwen2.5-0.5B's decoder shape (vocabulary aside) and is not pre-trained."""
    settings = MODE_SETTINGS[mode]
    raw = json.loads(json.dumps(repo_params))  # a deep copy
    raw["tasks"].update(CHECK_TASKS, source="builtin")
    raw.update(heldout_tasks=CHECK_HELDOUT, heldout_folds=None, max_training_tasks=None, probe_count=4)
    raw["teachers"].update(steps=settings["teacher_steps"], checkpoints_per_task=2, checkpoint_interval=10,
                           min_accuracy=0.0, below_bar="warn")
    raw["lora"].update(rank=settings["rank"], alpha=2.0 * settings["rank"])
    raw["train"].update(steps=settings["train_steps"], save_interval=settings["train_steps"], log_interval=10,
                        warmup_steps=10, lambda_warmup_steps=10)
    raw["evaluate"].update(prompt_batches=1, probe_count=4)
    if mode == "gpu":
        shape = QWEN25_05B
        raw["base"].update(model="tiny", pretrain_steps=0, tiny={
            "hidden_size": shape["hidden_size"], "num_layers": shape["num_hidden_layers"],
            "num_heads": shape["num_attention_heads"], "num_kv_heads": shape["num_key_value_heads"],
            "intermediate_size": shape["intermediate_size"]})
    else:
        raw["base"].update(model="tiny", pretrain_steps=50)
    return raw


def _recipe(stage: str) -> Callable[[Config], None]:
    import importlib

    return importlib.import_module(f"llgbm.recipes.{stage}").run


def _commit(repo: Path) -> str | None:
    try:
        return subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def run_stage_measured(stage: str, workdir: Path) -> dict:
    """One stage's recipe, in `workdir` (stages read and write paths relative to it): its wall seconds
    and its peak GPU memory (GiB; None off CUDA)."""
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    previous = Path.cwd()
    os.chdir(workdir)
    try:
        start = time.perf_counter()
        _recipe(stage)(load_config(PARAMS_FILE))
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    finally:
        os.chdir(previous)
    return {"stage": stage, "seconds": seconds,
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None}


def prepare(repo: Path, mode: str, out: Path) -> None:
    """Write the check's params into `out` and run the CPU-only stages there (tasks, split, embed)."""
    raw = check_params(yaml.safe_load((repo / PARAMS_FILE).read_text()), mode)
    config_from_dict(raw, "gpu-check params")  # fails here, not on the GPU machine
    out.mkdir(parents=True, exist_ok=True)
    (out / PARAMS_FILE).write_text(yaml.safe_dump(raw, sort_keys=False))
    for stage in PREPARED_STAGES:
        run_stage_measured(stage, out)
    write_json_atomic(out / PREPARED_MARK, {"mode": mode, "commit": _commit(repo)})


def check(repo: Path, mode: str, prepared: Path | None, result_file: Path, bench_repeats: int | None = None) -> int:
    """Run the stages and the bench; write `result_file`. 0 when every part completed, else 1."""
    settings = MODE_SETTINGS[mode]
    if mode == "gpu" and not torch.cuda.is_available():
        raise SystemExit("gpu-check: --mode gpu needs CUDA, and torch sees no GPU here (use --mode cpu)")
    result: dict = {"mode": mode, "commit": _commit(repo), "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                    "machine": {"platform": platform.platform(), "python": platform.python_version(),
                                "torch": torch.__version__, "cpu_count": os.cpu_count(),
                                "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None},
                    "stages": [], "failed": None}
    start = time.perf_counter()
    current = "prepare"
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        workdir = Path(tmp) / "work"
        try:
            if prepared is None:
                prepare(repo, mode, workdir)
            else:
                shutil.copytree(prepared, workdir)
            for current in MEASURED_STAGES:
                result["stages"].append(run_stage_measured(current, workdir))
            current = "report"
            cfg = load_config(workdir / PARAMS_FILE)
            train_seconds = next(s["seconds"] for s in result["stages"] if s["stage"] == "train")
            # Includes loading the base and saving the generator: a lower bound on the loop's own rate.
            result["train_steps_per_second_with_setup"] = cfg.train.steps / train_seconds
            result["evaluate_metrics"] = json.loads((workdir / "results/evaluate/metrics.json").read_text())["heldout"]["accuracy"]
        except BaseException as exc:  # noqa: BLE001 - any failure is the check's finding
            if isinstance(exc, KeyboardInterrupt):
                raise
            result["failed"] = {"stage": current, "error": f"{type(exc).__name__}: {exc}",
                                "traceback": traceback.format_exc(limit=8)}
    result["bench_delta"] = []
    for model, adapters, with_peft in settings["bench"] if result["failed"] is None else []:
        try:
            result["bench_delta"].append(bench_delta(
                load_config(repo / PARAMS_FILE), [model], adapters, bench_repeats or settings["bench_repeats"],
                settings["probes"], settings["probe_length"], settings["device"], settings["bench_dtype"],
                settings["fit_limit"], with_peft))
        except Exception as exc:  # noqa: BLE001 - a bench that fails (e.g. out of memory) is a finding
            result["failed"] = {"stage": f"bench_delta {model}", "error": f"{type(exc).__name__}: {exc}",
                                "traceback": traceback.format_exc(limit=8)}
            break
    result["total_seconds"] = time.perf_counter() - start
    write_json_atomic(result_file, result)
    print(json.dumps({k: v for k, v in result.items() if k != "bench_delta"}, indent=2))
    print(f"written: {result_file}")
    return 0 if result["failed"] is None else 1


def _pinned(requirement: str, constraints: Path) -> str:
    """`requirement` with the version constraints.txt pins for it (a bare name where it pins none)."""
    for line in constraints.read_text().splitlines():
        pin = line.split(";")[0].strip()
        if pin.lower().startswith(f"{requirement.lower()}=="):
            return pin
    return requirement


def download_wheels(repo: Path, out: Path, python_version: str) -> None:
    """On a machine with a registry: wheels of what the GPU image lacks, with their dependencies, for
    `python_version`, into `out` (carry it to the GPU machine beside the prepared folder)."""
    constraints = repo / "constraints.txt"
    pins = [_pinned(r, constraints) for r in IMAGE_LACKS.values()]
    sdists = [_pinned(r, constraints) for r in SDIST_ONLY]
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(out), *sdists], check=True)
    subprocess.run([*pip, "download", "-d", str(out), "-c", str(constraints), "--python-version", python_version,
                    "--only-binary=:all:",
                    "--find-links", str(out), *pins, *sdists], check=True)


def ensure_image_packages(wheels: Path | None) -> None:
    """Install what the stages import and this Python lacks, from `wheels` (no registry is reached)."""
    import importlib.util

    missing = [req for module, req in IMAGE_LACKS.items() if importlib.util.find_spec(module) is None]
    if not missing:
        return
    if wheels is None:
        raise SystemExit(f"gpu-check: {', '.join(missing)} not installed here; make a wheel folder on a machine "
                         f"with a registry (scripts/gpu-check --download-wheels DIR) and pass --wheels DIR")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(wheels), *missing],
                   check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/gpu-check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=sorted(MODE_SETTINGS), default="gpu")
    parser.add_argument("--prepare", type=Path, metavar="DIR", help="on CPU: write the check's inputs to DIR and stop")
    parser.add_argument("--prepared", type=Path, metavar="DIR", help="start from a folder --prepare wrote")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")) / "gpu-check.json",
                        help="the result file (default: $OUT/gpu-check.json)")
    parser.add_argument("--bench-repeats", type=int, default=None, help="default: 2 on a GPU, 1 on CPU")
    parser.add_argument("--wheels", type=Path, metavar="DIR", help="install what the image lacks from DIR")
    parser.add_argument("--download-wheels", type=Path, metavar="DIR",
                        help="with a registry: fill DIR with the wheels --wheels needs, and stop")
    parser.add_argument("--python-version", default=platform.python_version(),
                        help="with --download-wheels: the GPU image's Python (default: this one)")
    args = parser.parse_args(argv)
    repo = Path(__file__).resolve().parent.parent
    if args.download_wheels is not None:
        download_wheels(repo, args.download_wheels, args.python_version)
        return 0
    if args.prepare is not None:
        prepare(repo, args.mode, args.prepare)
        print(f"prepared {args.prepare} for --mode {args.mode}: carry it to the GPU machine, then run "
              f"scripts/gpu-check --prepared {args.prepare}")
        return 0
    if args.prepared is not None:
        mark = args.prepared / PREPARED_MARK
        if not mark.is_file():
            raise SystemExit(f"gpu-check: {args.prepared}: no {PREPARED_MARK}; make the folder with --prepare")
        made_for = json.loads(mark.read_text())["mode"]
        if made_for != args.mode:
            raise SystemExit(f"gpu-check: {args.prepared} was prepared for --mode {made_for}, not --mode {args.mode}")
    ensure_image_packages(args.wheels)
    return check(repo, args.mode, args.prepared, args.out, args.bench_repeats)
