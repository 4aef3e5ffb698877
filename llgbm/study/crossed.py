"""Inference that counts tasks as well as seeds: paired differences in a seeds x tasks table.

Every (seed, task) cell is one paired difference (arm minus reference, the same seed and task). The mean
over the table is uncertain through three sources: which seeds ran (sigma_seed), which tasks were drawn
(sigma_task) and their interaction plus noise (sigma_e). With S seeds and T tasks, a two-way random-effects
model gives Var(mean) = sigma_seed^2 / S + sigma_task^2 / T + sigma_e^2 / (S T). The mean squares of the
two-way ANOVA without replication estimate it: (MS_seed + MS_task - MS_res) / (S T) is unbiased; this
module uses (MS_seed + MS_task) / (S T), which adds sigma_e^2 / (S T) once more and so is slightly
conservative but never negative, with Satterthwaite's degrees of freedom for the t interval. Why a mixed
model rather than a bootstrap: with 8 held-out tasks a percentile bootstrap over tasks under-covers
(its variance is (T - 1) / T of the unbiased one and it uses normal quantiles where t(7) is 20% wider);
`tests/test_crossed.py` measures this interval's coverage on simulated tables with known effect and
variances.

With held-out folds (every task held out once over K folds, each fold its own runs), tasks are nested in
folds and the folds are independent: each fold's mean gets the interval above from its own seeds x tasks
table, and the overall mean (over every (fold, seed, task) cell) is their cell-weighted average, its
variance the weighted sum of theirs, its degrees of freedom Satterthwaite's over the folds
(`fold_stratified_mean`).

Several comparisons share one family: their p-values are Holm-adjusted. "No effect" is claimed only by
equivalence (two one-sided tests at a stated margin: the 90% interval inside +-margin); otherwise an
interval that holds 0 says "not shown either way".
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Mapping

from llgbm.study.stats import t_quantile, t_two_sided_p


@dataclass(frozen=True)
class CrossedEstimate:
    mean: float
    standard_error: float
    df: float  # Satterthwaite's
    seeds: int
    tasks: int
    folds: int = 1  # held-out folds pooled (their tasks are disjoint)

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        half = t_quantile(0.5 + level / 2, self.df) * self.standard_error
        return self.mean - half, self.mean + half

    @property
    def p_value(self) -> float:
        """Two-sided, for mean 0."""
        if self.standard_error == 0:
            return 0.0 if self.mean else 1.0
        return t_two_sided_p(self.mean / self.standard_error, self.df)


def complete_table(cells: Mapping[tuple[int, str], float]) -> tuple[list[int], list[str], list[list[float]]]:
    """The seeds and tasks of a complete table: every seed that has every task (a seed missing a task, a
    failed run, is left out whole rather than imputed)."""
    tasks = sorted({task for _, task in cells})
    seeds = sorted(seed for seed in {s for s, _ in cells} if all((seed, task) in cells for task in tasks))
    return seeds, tasks, [[cells[(s, t)] for t in tasks] for s in seeds]


def crossed_mean(cells: Mapping[tuple[int, str], float]) -> CrossedEstimate:
    """The mean paired difference over (seed, task) and its standard error counting seeds and tasks."""
    seeds, tasks, table = complete_table(cells)
    s, t = len(seeds), len(tasks)
    if s < 2 or t < 2:
        raise ValueError(f"a seeds x tasks interval needs 2 seeds and 2 tasks with every cell, got {s} x {t}")
    grand = statistics.fmean(v for row in table for v in row)
    seed_means = [statistics.fmean(row) for row in table]
    task_means = [statistics.fmean(row[j] for row in table) for j in range(t)]
    ms_seed = t * sum((m - grand) ** 2 for m in seed_means) / (s - 1)
    ms_task = s * sum((m - grand) ** 2 for m in task_means) / (t - 1)
    parts = [ms_seed / (s * t), ms_task / (s * t)]
    variance = sum(parts)
    if variance == 0:
        return CrossedEstimate(grand, 0.0, float(min(s, t) - 1), s, t)
    df = variance ** 2 / (parts[0] ** 2 / (s - 1) + parts[1] ** 2 / (t - 1))
    return CrossedEstimate(grand, math.sqrt(variance), df, s, t)


def fold_stratified_mean(cells: Mapping[tuple[tuple[int, int], str], float]) -> CrossedEstimate:
    """The mean paired difference over ((fold, seed), task) cells: each fold's seeds x tasks estimate
    (`crossed_mean`), combined with weights n_f / n (n_f the fold's cells) so the mean is that of every
    cell. Folds without a complete 2 x 2 table are left out (the estimate's `folds` says how many went in);
    ValueError where none has one."""
    by_fold: dict[int, dict[tuple[int, str], float]] = {}
    for ((fold, seed), task), value in cells.items():
        by_fold.setdefault(fold, {})[(seed, task)] = value
    estimates = []
    for fold_cells in by_fold.values():
        try:
            estimates.append(crossed_mean(fold_cells))
        except ValueError:
            continue
    if not estimates:
        raise ValueError("no fold has a complete table of 2 seeds x 2 tasks")
    if len(estimates) == 1:
        return estimates[0]
    sizes = [e.seeds * e.tasks for e in estimates]
    weights = [n / sum(sizes) for n in sizes]
    parts = [w * w * e.standard_error ** 2 for w, e in zip(weights, estimates)]
    variance = sum(parts)
    mean = sum(w * e.mean for w, e in zip(weights, estimates))
    df = variance ** 2 / sum(part ** 2 / e.df for part, e in zip(parts, estimates)) if variance > 0 else \
        float(sum(e.df for e in estimates))
    seeds = len({seed for (_, seed), _ in cells})
    return CrossedEstimate(mean, math.sqrt(variance), df, seeds, sum(e.tasks for e in estimates), len(estimates))


def holm(p_values: Mapping[str, float]) -> dict[str, float]:
    """Holm's step-down adjustment of a family's p-values (each the smallest family-wise level at which
    its comparison is rejected)."""
    ordered = sorted(p_values.items(), key=lambda item: item[1])
    adjusted, running = {}, 0.0
    for rank, (name, p) in enumerate(ordered):
        running = max(running, min(1.0, (len(ordered) - rank) * p))
        adjusted[name] = running
    return adjusted


def verdict(estimate: CrossedEstimate, margin: float, adjusted_p: float | None = None) -> str:
    """"better" / "worse" where the (Holm-adjusted) test rejects 0 at 5%; "equivalent within +-margin"
    where the 90% interval lies inside it (two one-sided tests at 5%); otherwise "not shown either way"."""
    p = estimate.p_value if adjusted_p is None else adjusted_p
    if p < 0.05:
        return "better" if estimate.mean > 0 else "worse"
    low, high = estimate.interval(0.90)
    if -margin < low and high < margin:
        return f"equivalent within ±{margin:g}"
    return "not shown either way"
