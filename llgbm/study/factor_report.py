"""`llgbm compare`'s section on validation and factors (issue 34): per arm, the generated adapters' accuracy on
the validation tasks (what `llgbm select` ranks arms on), the task-runs below chance, and accuracy per
selector and per transform of the compositional family.

A generator that fits every training task can still be a lookup table: for an unseen instruction it returns
a neighbouring seen task's adapter and scores below chance on that task, and a mean over tasks hides which
factor it fails to compose. The factor tables are read from the archived per-task results (a task of the
compositional family is named "<selector>_<transform>"), so they cover runs archived before the evaluation
wrote its own `by_factor` means; the below-chance counts come from the evaluation's metrics (runs archived
before it counted them have none). The section is written when asked (`--by-factor`) or when a run of the
key records validation figures or below-chance counts, so that reports of older runs stay as they were."""
from __future__ import annotations

import statistics

from llgbm.data.tasks import SELECTORS, TRANSFORMS, compositional_pairs
from llgbm.study.arms import Arm, arm_knobs, arm_order, objective_of
from llgbm.study.experiments import Replicate, Run, failed_replicates, group_runs, metric_value
from llgbm.study.report import _task_count_text, mean_cell

# Every task name of the compositional family: name -> (selector, transform). No name is two pairs: no
# transform's name starts with a selector's tail ("second" + "largest_..." is no pair).
FACTOR_PAIRS = compositional_pairs(list(SELECTORS), list(TRANSFORMS))
FACTORS = {"transform": (1, TRANSFORMS), "selector": (0, SELECTORS)}  # factor -> (index in a pair, its order)
GROUP_WORDS = {"heldout": "held-out", "validation": "validation"}
# The counts of COUNT_METRICS that the section reads: group -> (tasks below chance, tasks).
BELOW_CHANCE = {"validation": ("validation_below_chance", "validation_tasks"),
                "heldout": ("heldout_below_chance", "heldout_tasks")}


def task_group(entry: dict) -> str:
    """A per-task entry's group: the evaluation's own ("heldout", "validation", "seen"), else (an evaluation
    before validation tasks existed) held-out or seen."""
    group = entry.get("group")
    return str(group) if group is not None else ("heldout" if entry.get("heldout") else "seen")


def factor_cells(bucket: dict[Replicate, Run], group: str) -> list[tuple[str, float]]:
    """(task, the generated adapters' accuracy) of every run and compositional task of `group`."""
    cells = []
    for run in bucket.values():
        for task, entry in (run.per_task or {}).items():
            accuracy = metric_value(entry.get("generated"))
            if task in FACTOR_PAIRS and task_group(entry) == group and accuracy is not None:
                cells.append((task, accuracy))
    return cells


def factor_means(cells: list[tuple[str, float]], factor: str) -> dict[str, tuple[float, int]]:
    """Per value of `factor` ("selector" or "transform"), the mean over the cells of the tasks holding it and
    their number."""
    index = FACTORS[factor][0]
    values: dict[str, list[float]] = {}
    for task, accuracy in cells:
        values.setdefault(FACTOR_PAIRS[task][index], []).append(accuracy)
    return {part: (statistics.fmean(v), len(v)) for part, v in values.items()}


def has_new_figures(runs: list[Run]) -> bool:
    """Whether a finished run records validation accuracy or a below-chance count (code of issue 34 on)."""
    counts = [name for name, _ in BELOW_CHANCE.values()]
    return any(run.failure is None and (metric_value(run.metrics.get("validation_accuracy")) is not None
                                        or any(run.counts.get(name) is not None for name in counts))
               for run in runs)


def _below_chance_cell(bucket: dict[Replicate, Run], group: str) -> str:
    """The task-runs of `group` below chance over the runs that counted them, of their task-runs."""
    below_name, tasks_name = BELOW_CHANCE[group]
    counted = [r for r in bucket.values() if r.counts.get(below_name) is not None]
    if not counted:
        return "—"
    below = sum(int(r.counts[below_name]) for r in counted)  # type: ignore[arg-type]
    tasks = [r.counts.get(tasks_name) for r in counted]
    text = f"{below} of {sum(tasks)}" if all(t is not None for t in tasks) else str(below)  # type: ignore[misc]
    return text if len(counted) == len(bucket) else f"{text} ({len(counted)} of {len(bucket)} runs)"


def _label_cells(arm: Arm, knobs: dict[Arm, str]) -> list[str]:
    return [objective_of(dict(arm)), knobs.get(arm) or "—", _task_count_text(dict(arm)["max_training_tasks"])]


def _factor_table(arms: list[Arm], groups: dict[Arm, dict[Replicate, Run]], knobs: dict[Arm, str], group: str,
                  factor: str) -> list[str]:
    """One group's accuracy by one factor, an arm a row; nothing where no run kept a compositional task of it."""
    cells = {arm: factor_cells(groups[arm], group) for arm in arms}
    means = {arm: factor_means(cells[arm], factor) for arm in arms}
    present = {part for by_part in means.values() for part in by_part}
    if not present:
        return []
    parts = [part for part in FACTORS[factor][1] if part in present]
    lines = ["", f"{GROUP_WORDS[group].capitalize()} accuracy by {factor} (generated adapters; mean over the task-runs "
             f"of the {GROUP_WORDS[group]} tasks holding it):", "",
             "| arm | knobs | max training tasks | task-runs | " + " | ".join(parts) + " |",
             "|---|---|---|---|" + "---|" * len(parts)]
    for arm in arms:
        row = [f"{means[arm][part][0]:.3f}" if part in means[arm] else "—" for part in parts]
        lines.append("| " + " | ".join(_label_cells(arm, knobs) + [str(len(cells[arm]))] + row) + " |")
    return lines


def factor_section(runs: list[Run], asked: bool = False) -> str:
    """The section (markdown, starting with a blank line) for the runs of one key; "" unless `asked` or a
    finished run records validation figures or below-chance counts (`has_new_figures`). The validation
    columns and tables appear where a run has validation figures."""
    groups, failed = group_runs(runs), failed_replicates(runs)
    if not groups or not (asked or has_new_figures(runs)):
        return ""
    knobs = arm_knobs(sorted(set(groups) | set(failed), key=arm_order))
    arms = sorted(groups, key=arm_order)
    validation = {arm: [v for v in (metric_value(r.metrics.get("validation_accuracy")) for r in groups[arm].values())
                        if v is not None] for arm in arms}
    with_validation = any(validation.values()) or any(factor_cells(groups[arm], "validation") for arm in arms)
    header = ["arm", "knobs", "max training tasks", "runs"]
    header += ["validation accuracy", "validation task-runs below chance"] if with_validation else []
    header += ["held-out task-runs below chance"]
    lines = ["", "Validation and factors: per arm, "
             + ("the generated adapters' accuracy on the validation tasks (training tasks of the fold kept out of "
                "training, `validation_tasks`: what `llgbm select` ranks arms on; mean ± 95% t interval over runs), "
                if with_validation else "")
             + "the task-runs (run × task) whose generated adapters score below chance (a generator that returns a "
             "neighbouring seen task's adapter does), and the generated adapters' accuracy by factor of the "
             "compositional family, from the archived per-task results (a task named `<selector>_<transform>`); "
             "— where runs were archived without the counts or the per-task results.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for arm in arms:
        bucket = groups[arm]
        cells = _label_cells(arm, knobs) + [str(len(bucket))]
        if with_validation:
            cells += [mean_cell(validation[arm], len(bucket), "run"), _below_chance_cell(bucket, "validation")]
        lines.append("| " + " | ".join(cells + [_below_chance_cell(bucket, "heldout")]) + " |")
    for group in ("heldout", "validation"):
        for factor in FACTORS:
            lines += _factor_table(arms, groups, knobs, group, factor)
    return "\n".join(lines) + "\n"
