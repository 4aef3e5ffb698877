"""`llgbm select`: the generator's hyperparameters chosen on validation tasks, never on the held-out fold.

Choosing steps, width or the objective by held-out accuracy makes the held-out numbers optimistic. With
`validation_tasks: N`, N of the fold's training tasks are kept out of training and evaluated as the group
"validation" (each selector and transform still seen in training); an arm is chosen by the generated adapters'
accuracy on them, and the held-out fold keeps the final number (nested evaluation).

The runs are loaded as `llgbm compare` loads them (the archive and DVC's experiments of one key); of each, the
selection reads its arm, fold, seed, whether it failed, and one figure, through `validation_accuracy` alone.
`tests/test_select.py` proves it: scrambling or removing every held-out figure of the runs leaves the ranking
and the choice as they were."""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from llgbm.infra.errors import LlgbmError

# Through the modules, not their names: tests stand in for the DVC and git calls, as compare's do.
from llgbm.study import compare, run_archive
from llgbm.study.arms import Arm, arm_knobs, arm_order, objective_of
from llgbm.study.experiments import Replicate, Run, metric_value
from llgbm.study.report import _task_count_text

VALIDATION_METRIC = "validation_accuracy"  # llgbm.study.experiments.KEY_METRICS: validation.accuracy.generated


def validation_accuracy(run: Run) -> float | None:
    """The one figure of a run that selection reads: its generated adapters' mean accuracy on the validation
    tasks; None for a run without validation tasks (or archived before they existed)."""
    return metric_value(run.metrics.get(VALIDATION_METRIC))


def validation_figures(runs: Iterable[Run]) -> tuple[dict[Arm, dict[Replicate, float]], dict[Arm, int]]:
    """Per arm and replicate (fold, seed), the validation accuracy of its finished run (of a run repeated at
    one key, arm and replicate, the first, as the comparison counts it); and per arm the replicates without
    one (failed, or evaluated without validation tasks)."""
    figures: dict[Arm, dict[Replicate, float]] = {}
    seen: dict[Arm, set[Replicate]] = {}
    for run in sorted(runs, key=lambda r: r.failure is not None):  # a finished run counts before a failure
        if run.replicate in seen.setdefault(run.arm, set()):
            continue
        seen[run.arm].add(run.replicate)
        value = validation_accuracy(run) if run.failure is None else None
        if value is not None:
            figures.setdefault(run.arm, {})[run.replicate] = value
    without = {arm: len(replicates) - len(figures.get(arm, {})) for arm, replicates in seen.items()}
    return figures, without


@dataclass(frozen=True)
class Ranked:
    """An arm's place: its mean validation accuracy over runs, the standard error of that mean over runs
    (sd / sqrt(runs); None for one run), the runs, and its difference from the chosen arm paired by fold and
    seed (mean, standard error or None, common runs; None for the chosen arm or where no run is common)."""
    arm: Arm
    mean: float
    standard_error: float | None
    runs: int
    difference: tuple[float, float | None, int] | None


def _mean_se(values: list[float]) -> tuple[float, float | None]:
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else None)


def rank_arms(figures: Mapping[Arm, Mapping[Replicate, float]]) -> list[Ranked]:
    """The arms with validation figures, best first: by mean validation accuracy over their runs, ties in the
    study's order (arm_order). The first is the chosen arm. LlgbmError where no run has a validation figure."""
    means = {arm: _mean_se(list(values.values())) for arm, values in figures.items() if values}
    if not means:
        raise LlgbmError("no run has validation figures (`validation.accuracy.generated` of results/evaluate/"
                         "metrics.json): run the arms with validation tasks (e.g. `-S validation_tasks=10`); "
                         "nothing is chosen on held-out results")
    order = sorted(means, key=lambda arm: (-means[arm][0], arm_order(arm)))
    chosen = figures[order[0]]
    ranked = []
    for arm in order:
        common = sorted(set(figures[arm]) & set(chosen))
        difference = None
        if arm != order[0] and common:
            difference = (*_mean_se([figures[arm][r] - chosen[r] for r in common]), len(common))
        ranked.append(Ranked(arm, means[arm][0], means[arm][1], len(figures[arm]), difference))
    return ranked


def _se_text(mean: float, standard_error: float | None, signed: bool = False) -> str:
    text = f"{mean:+.3f}" if signed else f"{mean:.3f}"
    return f"{text} ± {standard_error:.3f}" if standard_error is not None else f"{text} (1 run, no SE)"


def selection_report(ranked: list[Ranked], without: Mapping[Arm, int]) -> str:
    """The ranking as a markdown table, then the chosen arm and what to read beside it."""
    knobs = arm_knobs([r.arm for r in ranked])

    def label(arm: Arm) -> str:
        return objective_of(dict(arm)) + (f" ({knobs[arm]})" if knobs.get(arm) else "")

    lines = ["| rank | arm | knobs | max training tasks | runs | validation accuracy (mean ± SE over runs) "
             "| Δ vs chosen, paired by fold and seed (mean ± SE, runs) |", "|---|---|---|---|---|---|---|"]
    for rank, r in enumerate(ranked, 1):
        runs = f"{r.runs} (+{without[r.arm]} without)" if without.get(r.arm) else str(r.runs)
        if rank == 1:
            difference = "chosen"
        elif r.difference is None:
            difference = "no common run"
        else:
            difference = f"{_se_text(r.difference[0], r.difference[1], signed=True)} ({r.difference[2]})"
        lines.append(f"| {rank} | {objective_of(dict(r.arm))} | {knobs.get(r.arm) or '—'} | "
                     f"{_task_count_text(dict(r.arm)['max_training_tasks'])} | {runs} | "
                     f"{_se_text(r.mean, r.standard_error)} | {difference} |")
    best = ranked[0]
    lines += ["", f"Chosen: {label(best.arm)}, max training tasks {_task_count_text(dict(best.arm)['max_training_tasks'])} "
              f"(validation accuracy {_se_text(best.mean, best.standard_error)} over {best.runs} runs)."]
    if len(ranked) > 1 and ranked[1].difference is not None and ranked[1].difference[1] is not None \
            and abs(ranked[1].difference[0]) < 2 * ranked[1].difference[1]:
        lines.append(f"The runner-up, {label(ranked[1].arm)}, is within two standard errors of it (paired): these "
                     "runs do not tell the two apart.")
    if len({r.runs for r in ranked}) > 1:
        lines.append("The arms have different numbers of runs: a mean over other folds and seeds is read beside "
                     "the paired difference, which counts only the runs both have.")
    absent = {arm: n for arm, n in without.items() if n and arm not in {r.arm for r in ranked}}
    if absent:
        lines.append("Not ranked (no run with validation figures): "
                     + ", ".join(f"{label(arm)} ({n} run{'s' if n != 1 else ''})"
                                 for arm, n in sorted(absent.items(), key=lambda item: arm_order(item[0]))) + ".")
    lines.append("Read from each run: its arm, fold, seed, whether it failed, and `validation.accuracy.generated`; "
                 "no held-out result. The held-out fold's figure of the chosen arm: `llgbm compare`.")
    return "\n".join(lines) + "\n"


def select(*, repo: str, revs: list[str] | None, runs: str | None, key: str | None, folds: list[int] | None,
           echo: compare.Echo) -> Ranked:
    """Rank the arms of `key` (default: the workspace's) from the archive `runs` (default: in `repo`) and the
    DVC experiments of `revs` by validation accuracy; report to `echo`; return the chosen arm's place."""
    archive = Path(runs) if runs else Path(repo) / run_archive.DEFAULT_ARCHIVE
    selected_key, every, _, _ = compare._merged_runs(archive, repo, revs, key, False, echo)
    of_key = [run for run in every if run.key == selected_key and (not folds or run.fold in folds)]
    figures, without = validation_figures(of_key)
    try:
        ranked = rank_arms(figures)
    except LlgbmError as exc:
        where = f" holding out fold {', '.join(map(str, sorted(folds)))}" if folds else ""
        raise LlgbmError(f"key {selected_key}: {len(of_key)} runs{where}; {exc}") from None
    echo(selection_report(ranked, without)
         + f"\nRuns of key `{selected_key}`{' (folds ' + ', '.join(map(str, sorted(folds))) + ')' if folds else ''}: "
         f"{sum(r.runs for r in ranked)} with validation figures, of {len(of_key)}.\n")
    return ranked[0]

