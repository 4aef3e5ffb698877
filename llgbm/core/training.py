"""The plain optimisation loop that the base's pre-training, the teachers and the multi-task LoRA share."""
from __future__ import annotations

from typing import Callable

import torch


def run_steps(optimizer: torch.optim.Optimizer, steps: int, step_loss: Callable[[int], torch.Tensor],
              after_step: Callable[[int, torch.Tensor], None] | None = None) -> list[float]:
    """For step 1..steps: loss = step_loss(step), one backward, one optimizer step, then
    after_step(step, loss); returns the loss curve. step_loss raises where a loss is not usable."""
    curve = []
    for step in range(1, steps + 1):
        loss = step_loss(step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        curve.append(loss.item())
        if after_step is not None:
            after_step(step, loss)
    return curve
