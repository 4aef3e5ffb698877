"""Adapters combined into one adapter: the baselines built from training teachers.

Two different "mean teachers" come from here, and their names say which:
- `mean_of_factors` averages A and B element-wise (meaningful because every teacher starts from one shared
  initialisation): the evaluation's `factor_mean_teacher`, over every training checkpoint. Its update is
  mean(B) @ mean(A), not the mean update.
- `combine_updates` with equal weights gives an adapter whose update B @ A is exactly the mean of the
  updates B_i @ A_i: the diagnostics' `update_mean_teacher`, over the final checkpoints.
"""
from __future__ import annotations

import torch

Adapter = dict[str, tuple[torch.Tensor, torch.Tensor]]  # {slot name: (A (r, in), B (out, r))}


def mean_of_factors(adapters: list[Adapter]) -> Adapter:
    """The element-wise mean of A and of B over adapters of one rank."""
    return {name: (torch.stack([a[name][0] for a in adapters]).mean(0), torch.stack([a[name][1] for a in adapters]).mean(0))
            for name in adapters[0]}


def combine_updates(adapters: list[Adapter], weights: list[float]) -> Adapter:
    """An adapter of rank sum(r_i) whose update B @ A is sum_i w_i B_i A_i, exactly (ranks concatenated: A
    stacked along its rows, w_i B_i along its columns). Saved, it needs lora rank and alpha times the count
    of adapters, so that its scaling alpha / rank is theirs."""
    return {name: (torch.cat([a[name][0] for a in adapters]),
                   torch.cat([w * a[name][1] for a, w in zip(adapters, weights)], 1)) for name in adapters[0]}
