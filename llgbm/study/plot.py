"""The study's plot: held-out accuracy against the number of training tasks, a line per objective (mean and
95% t interval over seeds), beside the testbed's references and chance, as a PNG."""
from __future__ import annotations

import io
import itertools
import statistics
from collections import Counter
from pathlib import Path
from typing import Any, Mapping

from matplotlib.figure import Figure

from llgbm.infra.io import write_bytes_atomic
from llgbm.study.arms import arm_knobs, arm_order, objective_of
from llgbm.study.experiments import Run, diagnostics_by_count, group_runs, metric_value
from llgbm.study.stats import mean_ci

DEFAULT_PLOT = Path("results/compare/heldout_vs_tasks.png")
# The testbed's references drawn beside the arms: label -> held-out accuracy metric of the diagnostics.
PLOT_REFERENCES = {"base model": "base_heldout_accuracy_mean",
                   "multi-task LoRA (reference)": "multitask_heldout_accuracy_mean"}


def training_task_count(runs: list[Run]) -> int | None:
    """How many tasks an arm trained on: the `train_tasks` metric where a stage writes it, else
    max_training_tasks, else (every task) the evaluation's `seen.tasks`, which scores each training task;
    the most common value over seeds; None where no run says."""
    counts = []
    for run in runs:
        count = run.train_tasks
        if count is None:
            count = dict(run.arm)["max_training_tasks"]
        if count is None:
            count = run.counts["seen_tasks"]
        if count is not None:
            counts.append(count)
    return Counter(counts).most_common(1)[0][0] if counts else None


def heldout_vs_tasks(runs: list[Run]) -> dict[str, list[tuple[int, float, float | None]]]:
    """Per line of the plot (an objective with its knobs, task count aside): (training tasks, mean held-out
    accuracy, t half-width or None) by training-task count. Arms whose task count is unknown are left out."""
    groups = group_runs(runs)
    arms = sorted(groups, key=arm_order)
    knobs = arm_knobs(arms)
    series: dict[str, list[tuple[int, float, float | None]]] = {}
    for arm in arms:
        count = training_task_count(list(groups[arm].values()))
        values = [r.metrics["heldout_accuracy"] for r in groups[arm].values()]
        if count is None or not values:
            continue
        label = objective_of(dict(arm)) + (f" ({knobs[arm]})" if knobs[arm] else "")
        series.setdefault(label, []).append((count, *mean_ci(values)))
    return {label: sorted(points) for label, points in series.items()}


def reference_points(runs: list[Run]) -> dict[str, list[tuple[int, float]]]:
    """Per testbed reference (PLOT_REFERENCES): (training tasks, held-out accuracy) from the diagnostics the
    runs of each training-task count read, the mean where runs of a count differ (one key: they do not).
    What the plot needs to say whether an arm's line is at the base's level or short of the headroom its
    task count leaves."""
    by_count = diagnostics_by_count(runs, lambda run: training_task_count([run]))
    counts = sorted(count for count in by_count if count is not None)  # None: a run of unknown task count
    points = {label: [(count, statistics.fmean(by_count[count][metric])) for count in counts
                      if metric in by_count[count]] for label, metric in PLOT_REFERENCES.items()}
    return {label: line for label, line in points.items() if line}


def chance_level(runs: list[Run], fallback: Mapping[str, Any] | None = None) -> float | None:
    """The held-out chance level the runs' diagnostics carry, else `fallback`'s (the workspace's)."""
    for run in runs:
        if "heldout_chance_mean" in run.diagnostics:
            return run.diagnostics["heldout_chance_mean"]
    return metric_value((fallback or {}).get("heldout_chance_mean"))


def write_plot(series: Mapping[str, list[tuple[int, float, float | None]]], chance: float | None,
               path: Path, references: Mapping[str, list[tuple[int, float]]] | None = None) -> None:
    """Held-out accuracy (mean and 95% t interval over seeds) against training tasks, a line per objective,
    and the testbed's `references` (reference_points) in grey, as a PNG (matplotlib's Agg canvas: no
    display needed)."""
    figure = Figure(figsize=(7, 4.5))
    axes = figure.add_subplot()
    ticks: set[int] = set()
    for label, points in series.items():
        xs = [p[0] for p in points]
        ticks.update(xs)
        axes.errorbar(xs, [p[1] for p in points], yerr=[p[2] or 0.0 for p in points], marker="o", capsize=3,
                      label=label)
    for (label, points), style in zip((references or {}).items(), itertools.cycle((":", "-."))):
        ticks.update(p[0] for p in points)
        axes.plot([p[0] for p in points], [p[1] for p in points], linestyle=style, marker="s", markersize=3,
                  color="dimgrey", label=label)
    if chance is not None:
        axes.axhline(chance, linestyle="--", color="grey", label="chance")
    axes.set_xticks(sorted(ticks))
    axes.set_xlabel("training tasks")
    axes.set_ylabel("held-out accuracy")
    axes.set_title("Generated adapters: mean and 95% t interval over seeds (no bar: one seed); "
                   "grey: the testbed's references", fontsize=8)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    write_bytes_atomic(path, buffer.getvalue())
