"""The comparison the study exists to make (`llgbm compare`'s markdown table): each arm's metrics over seeds
and its paired difference from the weight-only arm of the same training-task count (llgbm.study.stats),
the testbed's baselines as extra rows, then how to read it and which runs failed."""
from __future__ import annotations

import statistics
from typing import Any, Mapping

from llgbm.study.arms import CONTRASTS, Arm, arm_knobs, arm_order, closest_arm, objective_of, prompt_blind_of, reference_of
from llgbm.study.crossed import CrossedEstimate, fold_stratified_mean, holm, verdict
from llgbm.study.experiments import (
    COUNT_METRICS,
    DIAGNOSTIC_BASELINES,
    KEY_METRICS,
    NO_FOLD,
    RENAMED_DIAGNOSTICS,
    Replicate,
    Run,
    diagnostics_by_count,
    failed_replicates,
    group_runs,
    metric_value,
    renamed,
    replicate_text,
)
from llgbm.study.stats import detectable_difference, mean_ci, paired_difference

RANGE_METRICS = ("weight_norm_ratio",)  # reported as their range over seeds (`_range_cell`)
PAIRED_METRICS = ("heldout_accuracy", "seen_accuracy")
DETECTION_POWER = 0.8  # of the detectable held-out difference: could these seeds have shown an effect at all?
# "No effect" only within this margin of held-out accuracy: two seed SDs of the first study's held-out
# accuracy (0.015), so a difference inside it is no larger than what reseeding alone moves.
EQUIVALENCE_MARGIN = 0.03


# --- cells ------------------------------------------------------------------------------------------

def mean_cell(values: list[float], count: int, unit: str = "seed") -> str:
    """Mean ± half-width of the 95% t interval of `values`, and how many of `count` (seeds, or runs) they
    cover where some lack the figure."""
    if not values:
        return "—"
    mean, half = mean_ci(values)
    text = f"{mean:.3f} ± {half:.3f}" if half is not None else f"{mean:.3f} (1 {unit}, no CI)"
    return text if len(values) == count else f"{text} ({len(values)} of {count} {unit}s)"


def _range_cell(values: list[float], seeds: int) -> str:
    """A ratio that can span orders of magnitude across seeds: its range, not a t interval."""
    if not values:
        return "—"
    low, high = min(values), max(values)
    text = f"{low:.3g}" if low == high else f"{low:.3g}–{high:.3g}"
    return text if len(values) == seeds else f"{text} ({len(values)} of {seeds} seeds)"


def _paired(bucket: dict[Replicate, Run], reference: dict[Replicate, Run], metric: str) -> tuple[float, float | None, int] | None:
    values = {s: r.metrics[metric] for s, r in bucket.items() if r.metrics[metric] is not None}
    base = {s: r.metrics[metric] for s, r in reference.items() if r.metrics[metric] is not None}
    return paired_difference(values, base)


def _paired_cell(result: tuple[float, float | None, int] | None) -> str:
    if result is None:
        return "no common seed"
    mean, half, n = result
    if half is None:
        return f"{mean:+.3f} (1 seed, no CI)"
    return f"{mean:+.3f} ± {half:.3f} ({n} seeds)"


def _detectable_cell(result: tuple[float, float | None, int] | None) -> str:
    """The paired difference this arm's seeds could have shown (80% power), from its own spread."""
    if result is None or result[1] is None:
        return "—"
    return f"{detectable_difference(result[1], result[2], DETECTION_POWER):.3f}"


def _counts_cell(values: list[int | None]) -> str:
    """A count over seeds: the one value, a range where seeds differ, "?" where a run did not record it."""
    if not values or any(v is None for v in values):
        return "?"
    low, high = min(values), max(values)  # type: ignore[type-var]
    return str(low) if low == high else f"{low}–{high}"


def _task_count_text(count: int | None) -> str:
    return "all" if count is None else str(count)


# --- rows -------------------------------------------------------------------------------------------

def _diagnostic_rows(runs: list[Run], fallback: Mapping[str, Any] | None, width: int) -> list[str]:
    """The testbed's baselines as extra rows: per max_training_tasks where the diagnostics differ between
    counts, once ("any") where they do not; from `fallback` (the workspace's diagnostics) if no run has them."""
    by_count = diagnostics_by_count(runs, lambda run: dict(run.arm)["max_training_tasks"])
    if by_count:
        tables = {_task_count_text(c): v for c, v in sorted(by_count.items(), key=lambda i: (i[0] is None, i[0] or 0))}
        distinct = {str(sorted((k, sorted(set(v))) for k, v in table.items())) for table in tables.values()}
        if len(distinct) == 1:
            tables = {"any": next(iter(tables.values()))}
    elif fallback:
        tables = {"workspace": {k: [float(v)] for k, v in renamed(fallback, RENAMED_DIAGNOSTICS).items()
                                if metric_value(v) is not None}}
    else:
        return []

    def cell(values: list[float] | None) -> str:
        if not values:
            return "—"
        low, high = min(values), max(values)
        return f"{low:.3f}" if low == high else f"{low:.3f}–{high:.3f}"

    lines = []
    for count, table in tables.items():
        for name, (heldout, seen_metric) in DIAGNOSTIC_BASELINES.items():
            if heldout not in table:
                continue
            cells = [f"baseline: {name}", "testbed diagnostics", count, "—", "—",
                     cell(table.get(heldout)), cell(table.get(seen_metric) if seen_metric else None)]
            lines.append("| " + " | ".join(cells + ["—"] * (width - len(cells))) + " |")
    return lines


def _header() -> list[str]:
    return ["arm", "knobs", "max training tasks", "seeds", "tasks (held-out / seen)",
            *(KEY_METRICS[m][0] for m in ("heldout_accuracy", "seen_accuracy", "heldout_gain_share")),
            "gain share defined (per seed)",
            *(KEY_METRICS[m][0] for m in ("heldout_cosine", "heldout_cosine_centred", "weight_norm_ratio")),
            *(f"Δ {KEY_METRICS[m][0]} vs weight-only (paired)" for m in PAIRED_METRICS),
            f"Δ held-out accuracy detectable ({DETECTION_POWER:.0%} power)",
            "Δ held-out accuracy vs the same arm prompt-blind (paired)",
            "Δ held-out accuracy vs weight-only over seeds × tasks: 95% interval, Holm p, verdict"]


def crossed_cells(bucket: dict[Replicate, Run], reference: dict[Replicate, Run]) -> dict[tuple[Replicate, str], float]:
    """((fold, seed), held-out task) -> the arm's generated accuracy minus the reference's, same fold, seed
    and task, from the runs' per-task results (runs archived before those were kept have none)."""
    cells = {}
    for replicate, run in bucket.items():
        other = reference.get(replicate)
        if run.per_task is None or other is None or other.per_task is None:
            continue
        for task, entry in run.per_task.items():
            mine, theirs = entry.get("generated"), (other.per_task.get(task) or {}).get("generated")
            if entry.get("heldout") and isinstance(mine, float) and isinstance(theirs, float):
                cells[(replicate, task)] = mine - theirs
    return cells


def crossed_estimates(groups: dict[Arm, dict[Replicate, Run]]) -> dict[Arm, CrossedEstimate]:
    """Each arm's seeds x tasks comparison with its weight-only reference (fold by fold where runs held
    out folds), where a fold has 2 seeds x 2 tasks."""
    estimates = {}
    for arm, bucket in groups.items():
        reference = reference_of(arm, list(groups))
        if reference is None or reference == arm:
            continue
        try:
            estimates[arm] = fold_stratified_mean(crossed_cells(bucket, groups[reference]))
        except ValueError:
            continue
    return estimates


def _arm_label(arm: Arm, knobs: dict[Arm, str]) -> str:
    """An arm in words outside the table: its objective, then the knobs its name does not say."""
    return objective_of(dict(arm)) + (f" ({knobs[arm]})" if knobs.get(arm) else "")


def contrast_estimates(groups: dict[Arm, dict[Replicate, Run]]) -> list[tuple[Arm, Arm, CrossedEstimate]]:
    """Each contrast of CONTRASTS that ran: (first arm, the second's closest arm, first minus second over
    (fold, seed, task) cells), per arm of the first objective (one per training-task count or knob set)."""
    arms = sorted(groups, key=arm_order)
    contrasts = []
    for first, second in CONTRASTS:
        for arm in (a for a in arms if objective_of(dict(a)) == first):
            other = closest_arm(arm, second, arms)
            if other is None:
                continue
            try:
                contrasts.append((arm, other, fold_stratified_mean(crossed_cells(groups[arm], groups[other]))))
            except ValueError:
                continue
    return contrasts


def _contrast_notes(contrasts: list[tuple[Arm, Arm, CrossedEstimate]], knobs: dict[Arm, str]) -> list[str]:
    """The contrasts between objectives as a table of their own: their own Holm family."""
    adjusted = holm({str((a, b)): e.p_value for a, b, e in contrasts})

    lines = ["", "Contrasts between objectives (first minus second: held-out accuracy paired by fold, seed and task, "
             "the seeds × tasks interval above; Holm-adjusted over these contrasts, a family of their own):", "",
             "| contrast | max training tasks | Δ held-out accuracy over seeds × tasks: 95% interval, Holm p, verdict |",
             "|---|---|---|"]
    lines += [f"| {_arm_label(a, knobs)} − {_arm_label(b, knobs)} | {_task_count_text(dict(a)['max_training_tasks'])} | "
              f"{_crossed_cell(e, adjusted[str((a, b))])} |" for a, b, e in contrasts]
    return lines


def _fold_notes(arms: list[Arm], groups: dict[Arm, dict[Replicate, Run]], knobs: dict[Arm, str]) -> list[str]:
    """Per arm and held-out fold: the held-out accuracy (mean over the fold's seeds) and the paired difference
    from weight-only in that fold; then the range of those differences over folds (the per-fold spread).
    Nothing where the runs hold out fewer than two folds."""
    folds = sorted({fold for bucket in groups.values() for fold, _ in bucket if fold != NO_FOLD})
    if len(folds) < 2:
        return []

    def in_fold(bucket: dict[Replicate, Run], fold: int) -> dict[Replicate, Run]:
        return {replicate: run for replicate, run in bucket.items() if replicate[0] == fold}

    lines = ["", "Per held-out fold: held-out accuracy (mean over the fold's seeds) and, in brackets, the paired "
             "difference from weight-only in that fold (its seeds); the spread is the range of those differences "
             "over folds.", "",
             "| arm | max training tasks | " + " | ".join(f"fold {f}" for f in folds) + " | spread of Δ over folds |",
             "|---|---|" + "---|" * (len(folds) + 1)]
    for arm in arms:
        bucket, reference = groups.get(arm, {}), reference_of(arm, list(groups))
        cells, differences = [], []
        for fold in folds:
            mine = in_fold(bucket, fold)
            values = [r.metrics["heldout_accuracy"] for r in mine.values() if r.metrics.get("heldout_accuracy") is not None]
            if not values:
                cells.append("—")
                continue
            paired = (_paired(mine, in_fold(groups[reference], fold), "heldout_accuracy")
                      if reference is not None and reference != arm else None)
            if paired is not None:
                differences.append(paired[0])
            cells.append(f"{statistics.fmean(values):.3f}" + (f" ({paired[0]:+.3f})" if paired is not None else ""))
        spread = f"{min(differences):+.3f} to {max(differences):+.3f}" if len(differences) > 1 else "—"
        lines.append(f"| {_arm_label(arm, knobs)} | {_task_count_text(dict(arm)['max_training_tasks'])} | " + " | ".join(cells)
                     + f" | {spread} |")
    return lines


def _crossed_cell(estimate: CrossedEstimate | None, adjusted_p: float | None) -> str:
    if estimate is None or adjusted_p is None:
        return "—"
    low, high = estimate.interval()
    folds = f"{estimate.folds} folds, " if estimate.folds > 1 else ""
    return (f"{estimate.mean:+.3f} [{low:+.3f}, {high:+.3f}] ({folds}{estimate.seeds} seeds × {estimate.tasks} tasks), "
            f"p {adjusted_p:.3f}: {verdict(estimate, EQUIVALENCE_MARGIN, adjusted_p)}")


def _arm_row(arm: Arm, groups: dict[Arm, dict[Replicate, Run]], failed: dict[Arm, dict[Replicate, Run]], knobs: str,
             crossed: str = "—") -> str:
    """One arm's row: its metrics over seeds, then its paired differences from its weight-only reference."""
    bucket = groups.get(arm, {})
    reference = reference_of(arm, list(groups))
    if reference is None:
        diffs = ["no weight-only run"] * (len(PAIRED_METRICS) + 1)
    elif reference == arm:
        diffs = ["reference"] * (len(PAIRED_METRICS) + 1)
    else:
        paired = {m: _paired(bucket, groups[reference], m) for m in PAIRED_METRICS}
        diffs = [*(_paired_cell(paired[m]) for m in PAIRED_METRICS), _detectable_cell(paired["heldout_accuracy"])]
    blind = prompt_blind_of(arm, list(groups))
    diffs.append("—" if blind is None else _paired_cell(_paired(bucket, groups[blind], "heldout_accuracy")))
    diffs.append(crossed)
    n, n_failed = len(bucket), len(failed.get(arm, {}))
    # .get: a run archived before a metric joined the report lacks it
    metric_cells = {m: (_range_cell if m in RANGE_METRICS else mean_cell)(
                        [r.metrics[m] for r in bucket.values() if r.metrics.get(m) is not None], n)
                    for m in KEY_METRICS}
    counts = {c: [r.counts.get(c) for r in bucket.values()] for c in COUNT_METRICS}  # .get: as metrics
    seeds_cell = f"{n} (+{n_failed} failed)" if n_failed else str(n)
    cells = [objective_of(dict(arm)), knobs or "—", _task_count_text(dict(arm)["max_training_tasks"]), seeds_cell,
             f"{_counts_cell(counts['heldout_tasks'])} / {_counts_cell(counts['seen_tasks'])}",
             metric_cells["heldout_accuracy"], metric_cells["seen_accuracy"], metric_cells["heldout_gain_share"],
             _counts_cell(counts["gain_defined"]), metric_cells["heldout_cosine"],
             metric_cells["heldout_cosine_centred"], metric_cells["weight_norm_ratio"], *diffs]
    return "| " + " | ".join(cells) + " |"


# --- notes under the table --------------------------------------------------------------------------

_HOW_TO_READ = (
    "Each cell: mean ± half-width of the 95% Student's t interval over seeds (df = seeds - 1). The Δ columns "
    "pair each arm with the weight-only arm of the same max training tasks by seed: only seeds present in "
    "both count (their number shown), and the interval is that of the mean per-seed difference. "
    f"Detectable: the true held-out difference a two-sided 5% paired t test over those seeds would find "
    f"with {DETECTION_POWER:.0%} power, (t(0.975) + t({DETECTION_POWER:g})) x sd / sqrt(seeds) from the arm's "
    "own per-seed differences: an interval around 0 rules out effects of about that size, not smaller "
    "ones. Prompt-blind: the paired difference from the arm that is the same but for a constant generator "
    "condition (`generator.condition: constant`), where one ran: what the prompts add over one adapter. "
    "Seeds × tasks: the mean over (seed, held-out task) of the paired difference from weight-only, its 95% "
    "interval from a two-way random-effects model (task and seed variation together, llgbm/study/crossed.py), "
    "its p-value Holm-adjusted over every arm in this column (the family), and the verdict: better or worse "
    f"where the adjusted p < 0.05, equivalent where the 90% interval lies within ±{EQUIVALENCE_MARGIN} (two "
    "seed SDs of the first study's held-out accuracy), otherwise not shown either way; runs archived before "
    "per-task results were kept have none (—). "
    "Held-out folds (`heldout_folds`): a \"seed\" above is one (fold, seed) run; means pool every fold's "
    "runs, pairs match fold and seed, and the seeds × tasks interval is estimated fold by fold and combined "
    "(the folds' tasks are disjoint). "
    "Tasks: "
    "the held-out and seen tasks each mean covers, from the evaluation's `heldout.tasks` / `seen.tasks` "
    "(? where a run did not record them). Delta cosine on the evaluation probe set, raw and centred on "
    "the mean training-teacher delta. Weight norm: the generated weights' norm over their teachers' in the "
    "last training batch (`weight_norm_ratio` of `results/train/metrics.json`), its range over seeds. "
    "Baseline rows: the testbed's diagnostics "
    "(`results/diagnostics/metrics.json`; no seed, so no interval; a range where runs differ). "
    "Training curves side by side: `dvc plots diff <experiment names>`.")


def _failure_notes(arms: list[Arm], failed: dict[Arm, dict[Replicate, Run]], knobs: dict[Arm, str]) -> list[str]:
    """The failed runs, one line each with why it stopped."""
    notes = ["", "Failed runs (the seeds counted as failed above; no metric of theirs is in any mean or "
             "difference, so an arm's numbers cover only the seeds that finished):"]
    for arm in arms:
        for replicate, run in sorted(failed.get(arm, {}).items()):
            notes.append(f"- {_arm_label(arm, knobs)}, max training tasks {_task_count_text(dict(arm)['max_training_tasks'])}, "
                         f"{replicate_text(replicate)} ({run.name}): {run.failure}")
    return notes


def comparison_report(runs: list[Run], diagnostics_fallback: Mapping[str, Any] | None = None) -> str:
    """The markdown table: each arm's metrics over seeds and its paired difference from the weight-only arm
    of its training-task count, then the testbed's baselines as extra rows, then how to read it. `runs` are
    of one key (llgbm.study.run_archive): runs made by other code or params are not comparable."""
    groups, failed = group_runs(runs), failed_replicates(runs)
    if not groups and not failed:
        return "No finished experiments with evaluation metrics.\n"
    arms = sorted(set(groups) | set(failed), key=arm_order)
    knobs = arm_knobs(arms)
    header = _header()
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    estimates = crossed_estimates(groups)
    adjusted = holm({str(arm): e.p_value for arm, e in estimates.items()})
    lines += [_arm_row(arm, groups, failed, knobs[arm], _crossed_cell(estimates.get(arm), adjusted.get(str(arm))))
              for arm in arms]
    lines += _diagnostic_rows(runs, diagnostics_fallback, len(header))
    notes = ["", _HOW_TO_READ]
    notes += _fold_notes(arms, groups, knobs)
    contrasts = contrast_estimates(groups)
    if contrasts:
        notes += _contrast_notes(contrasts, knobs)
    if failed:
        notes += _failure_notes(arms, failed, knobs)
    return "\n".join(lines + notes) + "\n"
