"""`llgbm bench teachers`: the teachers recipe's two paths, `train_teachers_together` (every task's LoRA in one
batched forward per step) against `train_teacher` for one task after another (PEFT), interleaved
(`bench.timing.interleaved`) in one process. Each call trains from the shared initialisation and saves and
scores one snapshot per task, as the stage does, into a directory of its own; the base is untrained (speed only)."""
from __future__ import annotations

import dataclasses
import platform
import tempfile
from itertools import count
from pathlib import Path

import torch

from llgbm.artifacts.adapters import shared_initialisation
from llgbm.artifacts.base_model import load_base
from llgbm.bench.timing import interleaved
from llgbm.bench.world import untrained_base
from llgbm.config import Config
from llgbm.recipes.teachers import train_teacher, train_teachers_together


def bench_teachers(cfg: Config, task_count: int | None, steps: int, repeats: int = 1) -> dict:
    """Median wall seconds to train `task_count` of params' tasks (default: all) for `steps` steps, each
    path once per round after a warm-up round."""
    teachers = dataclasses.replace(cfg.teachers, steps=steps, checkpoints_per_task=1, checkpoint_interval=1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bench_cfg, tasks, tokenizer = untrained_base(dataclasses.replace(cfg, teachers=teachers), root / "base")
        tasks = tasks[:task_count]
        init = shared_initialisation(load_base(root / "base", device="cpu"), bench_cfg.lora, bench_cfg.teachers.seed)
        runs = count()

        def together() -> None:
            train_teachers_together(root / "base", tokenizer, tasks, list(range(len(tasks))), init, bench_cfg,
                                    root / f"together-{next(runs)}")

        def one_after_another() -> None:
            out = root / f"alone-{next(runs)}"
            for index, task in enumerate(tasks):
                train_teacher(root / "base", tokenizer, task, init, bench_cfg, out / task.name, index)

        timed = interleaved({"together": together, "one_after_another": one_after_another}, repeats)
    together_s, alone_s = timed["together"].seconds, timed["one_after_another"].seconds
    return {"tasks": len(tasks), "steps": steps, "repeats": repeats, "batch_size": bench_cfg.teachers.batch_size,
            "together_seconds": together_s, "one_after_another_seconds": alone_s,
            "together_over_one_after_another": together_s / alone_s,
            "torch_threads": torch.get_num_threads(), "machine": platform.machine()}
