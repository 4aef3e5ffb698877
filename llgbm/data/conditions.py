"""The prompt batches that condition a generated adapter when it is measured: a task's test prompts, drawn
by a seed of the run and the task's name, the same wherever the adapter is generated (training's
validation curve, the evaluate stage)."""
from __future__ import annotations

import torch

from llgbm.data.tasks import Task


def evaluation_prompt_batches(task: Task, size: int, batches: int, seed: int) -> list[list[str]]:
    """`batches` draws of `size` of the task's test prompts (its generator conditions), each without
    replacement."""
    rng = torch.Generator().manual_seed(seed * 1000 + sum(map(ord, task.name)))
    return [[task.test[i].condition for i in torch.randperm(len(task.test), generator=rng)[:size].tolist()]
            for _ in range(batches)]
