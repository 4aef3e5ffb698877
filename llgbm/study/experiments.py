"""The study as queued DVC experiments, and the comparison it exists to make (issue 11).

`llgbm grid` queues arms (one `dvc exp run --queue` per arm, swept over seeds); `llgbm compare` reads the
finished experiments back through `dvc.api.exp_show`, names each arm by its objective, and compares it with
the weight-only arm of the same training-task count by per-seed differences (llgbm.study.stats)."""
from __future__ import annotations

import ast
import io
import itertools
import math
import re
import shlex
import statistics
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping

import dvc.api
from dvc.exceptions import DvcException
from matplotlib.figure import Figure

from llgbm.infra.errors import LlgbmError, first_line
from llgbm.infra.io import write_bytes_atomic
from llgbm.study.stats import detectable_difference, mean_ci, paired_difference

# The knobs an arm is made of: top-level params, and `train.lambda_weights` (exp_show and `-S` both name a
# nested param by its dotted path).
ARM_KEYS = ("lambda_delta", "delta_loss_type", "probe_count", "lambda_schedule", "delta_reduce", "delta_layers",
            "loss_balance", "behaviour_loss", "max_training_tasks", "train.lambda_weights")
# exp_show gives every number as a float; these knobs are integers.
INTEGER_KNOBS = ("probe_count", "max_training_tasks", "seed")

# The spec's ablations (`--study ablations`): one knob at a time (others at params.yaml's values), plus one
# interaction.
SINGLE_AXES: dict[str, list[Any]] = {
    "lambda_delta": [0.0, 0.1, 0.5, 1.0, 2.0],
    "delta_loss_type": ["mse", "cosine", "combined"],
    "probe_count": [3, 5, 10],
    "lambda_schedule": ["constant", "linear", "cosine"],
    "delta_reduce": ["mean", "per_probe"],
    "delta_layers": ["last", "all"],
    "loss_balance": ["none", "grad_norm"],
    "behaviour_loss": ["delta", "kl"],
}
INTERACTION = {"lambda_delta": [0.1, 1.0], "delta_loss_type": ["mse", "cosine"]}

# The study's objectives: the knobs that define each, others at params.yaml's values. Training on the
# behaviour term alone (train.lambda_weights = 0) needs the plain sum: grad_norm balancing scales the
# behaviour term by the weight term's gradient norm, which is then zero (the config rejects the pair).
OBJECTIVES: dict[str, dict[str, Any]] = {
    "weight-only": {"lambda_delta": 0.0},
    "delta": {"behaviour_loss": "delta", "delta_reduce": "mean", "delta_layers": "last"},
    "per-probe delta": {"behaviour_loss": "delta", "delta_reduce": "per_probe", "delta_layers": "last"},
    "multi-layer delta": {"behaviour_loss": "delta", "delta_reduce": "mean", "delta_layers": "all"},
    "KL": {"behaviour_loss": "kl"},
    "delta-only": {"behaviour_loss": "delta", "delta_reduce": "mean", "delta_layers": "last",
                   "train.lambda_weights": 0.0, "loss_balance": "none"},
    "KL-only": {"behaviour_loss": "kl", "train.lambda_weights": 0.0, "loss_balance": "none"},
}
STUDY_LAMBDAS = (0.1, 1.0, 5.0)  # lambda_delta of the delta objective
# Training-task counts (None: every training task). The held-out set is fixed; the smallest count is 8
# because 8 held-out pairs over 8 transforms need each of their selectors and transforms seen in training.
STUDY_TASK_COUNTS = (8, 12, 24, None)
TASK_COUNT_OBJECTIVES = ("weight-only", "delta", "KL")
STUDIES = ("objectives", "lambdas", "task_counts", "all", "ablations")

# dvc exp show's State of an experiment whose outputs are its own (None: one run by `dvc exp run` in the
# workspace, which has no executor state), and of one whose run stopped with an error.
FINISHED_STATES = ("Success", None)
FAILED_STATE = "Failed"
PENDING_STATES = ("Queued", "Running")
PARAMS = "params.yaml"
EVALUATION = "results/evaluate/metrics.json"
DIAGNOSTICS = "results/diagnostics/metrics.json"
# Report columns: (header, the evaluation's metric).
KEY_METRICS: dict[str, tuple[str, str]] = {
    "heldout_accuracy": ("held-out accuracy", "heldout.accuracy.generated"),
    "seen_accuracy": ("seen accuracy", "seen.accuracy.generated"),
    "heldout_gain_share": ("held-out gain share", "heldout.gain_share.generated"),
    "heldout_cosine": ("held-out delta cosine (eval probes)", "heldout.delta_cosine_eval.generated"),
    "heldout_cosine_centred": ("held-out delta cosine, centred", "heldout.delta_cosine_eval_centred.generated"),
    # How far the generated weights strayed from the teachers' scale: an objective can match behaviour
    # with adapters far larger than any teacher's.
    "weight_norm_ratio": ("generated / teacher weight norm, last train step (range over seeds)", "weight_norm_ratio"),
}
RANGE_METRICS = ("weight_norm_ratio",)  # reported as their range over seeds (`_range_cell`)
TRAIN_METRICS = "results/train/metrics.json"
METRIC_FILES = {"weight_norm_ratio": TRAIN_METRICS}  # the others: EVALUATION's
PAIRED_METRICS = ("heldout_accuracy", "seen_accuracy")
DETECTION_POWER = 0.8  # of the detectable held-out difference: could these seeds have shown an effect at all?
COUNT_METRICS = {"heldout_tasks": "heldout.tasks", "seen_tasks": "seen.tasks",
                 "gain_defined": "heldout.defined.gain_share.generated"}
TRAIN_TASKS_METRIC = "train_tasks"  # the number of training tasks, where a stage writes it
# The testbed's baselines (results/diagnostics/metrics.json): row name -> (held-out, seen) accuracy metric.
DIAGNOSTIC_BASELINES: dict[str, tuple[str, str | None]] = {
    "chance": ("heldout_chance_mean", None),
    "base model": ("base_heldout_accuracy_mean", None),
    "mean of training teachers": ("mean_teacher_heldout_accuracy_mean", None),
    "nearest training teacher": ("nearest_teacher_heldout_accuracy_mean", None),
    "k nearest training teachers": ("knearest_teachers_heldout_accuracy_mean", None),
    "task arithmetic": ("task_arithmetic_heldout_accuracy_mean", None),
    "multi-task LoRA": ("multitask_heldout_accuracy_mean", "multitask_seen_accuracy_mean"),
}
README_BEGIN = "<!-- compare:begin -->"  # markers("compare")
README_END = "<!-- compare:end -->"
DEFAULT_PLOT = Path("results/compare/heldout_vs_tasks.png")

Arm = tuple[tuple[str, Any], ...]


# --- the grid ---------------------------------------------------------------------------------------

def knob_defaults(params: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Every knob of ARM_KEYS at its value in `params` (a nested dict of params.yaml's values)."""
    defaults = {}
    for key in ARM_KEYS:
        node: Any = params
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                raise LlgbmError(f"{source}: no '{key}' (a knob of llgbm grid)")
            node = node[part]
        defaults[key] = node
    return defaults


def _arms(defaults: Mapping[str, Any], overrides: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each override with every other knob at `defaults`; an arm equal to an earlier one is dropped."""
    arms: list[dict[str, Any]] = []
    for override in overrides:
        arm = {k: override.get(k, defaults[k]) for k in ARM_KEYS}
        if arm not in arms:
            arms.append(arm)
    return arms


def grid_arms(defaults: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The spec's ablation grid with every knob spelled out (an arm equal to another is queued once)."""
    overrides: list[dict[str, Any]] = []
    for key, values in SINGLE_AXES.items():
        overrides += [{key: v} for v in values]
    overrides += [{"lambda_delta": ld, "delta_loss_type": lt} for ld in INTERACTION["lambda_delta"]
                  for lt in INTERACTION["delta_loss_type"]]
    return _arms(defaults, overrides)


def study_arms(defaults: Mapping[str, Any], study: str, source: str = "params.yaml") -> list[dict[str, Any]]:
    """The arms of one part of issue 11's study ("objectives", "lambdas", "task_counts"), of all three
    ("all", each arm once), or the old ablation grid ("ablations"); `defaults` come from `source`."""
    if study not in STUDIES:
        raise ValueError(f"study '{study}' is not one of {STUDIES}")
    if study == "ablations":
        return grid_arms(defaults)
    if not defaults["lambda_delta"]:
        raise LlgbmError(f"{source}: 'lambda_delta' is 0, so every behavioural objective of the study would be "
                         "weight-only; set it to the study's value (e.g. 1.0)")
    overrides: list[dict[str, Any]] = []
    if study in ("objectives", "all"):
        overrides += list(OBJECTIVES.values())
    if study in ("lambdas", "all"):
        overrides += [{**OBJECTIVES["delta"], "lambda_delta": value} for value in STUDY_LAMBDAS]
    if study in ("task_counts", "all"):
        overrides += [{**OBJECTIVES[name], "max_training_tasks": count}
                      for count in STUDY_TASK_COUNTS for name in TASK_COUNT_OBJECTIVES]
    return _arms(defaults, overrides)


def override_value(value: Any) -> str:
    """A param value as `dvc exp run -S key=value` parses it (YAML-like: null, true, [1,2])."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(override_value(v) for v in value) + "]"
    return str(value)


def queue_commands(arms: list[dict[str, Any]], seeds: list[int]) -> list[list[str]]:
    """One `dvc exp run --queue` per arm; `-S seed=0,1,2` makes DVC queue one experiment per seed."""
    seed_values = ",".join(str(s) for s in seeds)
    return [["dvc", "exp", "run", "--queue", *[a for k, v in arm.items() for a in ("-S", f"{k}={override_value(v)}")],
             "-S", f"seed={seed_values}"] for arm in arms]


def arm_of(knobs: Mapping[str, Any]) -> Arm:
    """An arm's knobs (a study arm, params) as the arm of a run read back from exp_show."""
    return tuple((k, _param(k, knobs[k])) for k in ARM_KEYS)


def missing_seeds(arms: list[dict[str, Any]], seeds: list[int],
                  have: set[tuple[Arm, int]]) -> list[tuple[dict[str, Any], list[int]]]:
    """Per arm, the seeds of `seeds` whose (arm, seed) `have` lacks; arms with none left are left out."""
    missing = []
    for arm in arms:
        left = [s for s in seeds if (arm_of(arm), s) not in have]
        if left:
            missing.append((arm, left))
    return missing


def queue_grid(seeds: list[int], dry_run: bool, arms: list[dict[str, Any]],
               have: set[tuple[Arm, int]] | None = None) -> list[str]:
    """Queue (or with `dry_run` only print) the arms over `seeds`; with `have`, only the (arm, seed) pairs it
    lacks, so that a study interrupted or spread over sessions is finished by the same command."""
    arm_seeds = missing_seeds(arms, seeds, have) if have is not None else [(arm, seeds) for arm in arms]
    lines = []
    for arm, arm_seed_list in arm_seeds:
        command = queue_commands([arm], arm_seed_list)[0]
        lines.append(shlex.join(command))
        if not dry_run:
            subprocess.run(command, check=True)
    return lines


def pending_runs(rows: list[dict]) -> set[tuple[Arm, int]]:
    """The (arm, seed) pairs of exp_show rows queued or running."""
    pending = set()
    for row in rows:
        seed = _param("seed", _lookup(row, "seed", PARAMS))
        if row.get("Experiment") is not None and row.get("State") in PENDING_STATES and isinstance(seed, int):
            pending.add((arm_of({k: _lookup(row, k, PARAMS) for k in ARM_KEYS}), seed))
    return pending


# --- reading finished experiments -------------------------------------------------------------------

def experiment_baselines(repo: str = ".") -> list[str]:
    """The commits that have finished DVC experiments: DVC files an experiment under
    refs/exps/<baseline[:2]>/<baseline[2:]>/<name> (queued ones live under refs/exps/celery)."""
    result = subprocess.run(["git", "-C", repo, "for-each-ref", "--format=%(refname)", "refs/exps"],
                            capture_output=True, text=True)
    baselines = set()
    for ref in result.stdout.split() if result.returncode == 0 else []:
        parts = ref.split("/")
        sha = "".join(parts[2:4]) if len(parts) == 5 else ""
        if len(sha) == 40 and all(c in "0123456789abcdef" for c in sha):
            baselines.add(sha)
    return sorted(baselines)


def exp_rows(repo: str = ".", revs: list[str] | None = None) -> list[dict]:
    """exp_show's rows of the experiments of `revs`; by default, of every commit that has any (runs of other
    code are told apart by their keys, not by where they hang), else HEAD's."""
    revs = revs or experiment_baselines(repo) or None
    try:
        return dvc.api.exp_show(repo=repo, revs=revs)
    except DvcException as exc:
        raise LlgbmError(f"{repo}: dvc exp show failed ({first_line(exc)})") from None


def _lookup(row: Mapping[str, Any], name: str, file: str | None = None) -> Any:
    """A param or metric of an exp_show row. exp_show prefixes a name with its file ("path:name") only when
    two files share it, so: the bare name, else `file`'s, else (no file given) any file's."""
    if name in row:
        return row[name]
    if file is not None:
        return row.get(f"{file}:{name}")
    return next((value for key, value in row.items() if key.endswith(f":{name}")), None)


def _param(key: str, value: Any) -> Any:
    """A param as written in params.yaml. exp_show prints what is not a number: null reads back as the
    string "None" and a list as its repr; every number comes back a float."""
    if isinstance(value, str):
        if value == "None":
            return None
        if value.startswith("["):
            value = ast.literal_eval(value)
    if isinstance(value, (list, tuple)):
        return tuple(int(v) if isinstance(v, float) and v.is_integer() else v for v in value)
    if key in INTEGER_KNOBS and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _number(value: Any) -> float | None:
    """A metric's value; None for an absent, null (exp_show: "None") or non-finite one."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _count(value: Any) -> int | None:
    number = _number(value)
    return int(number) if number is not None else None


@dataclass(frozen=True)
class Run:
    """One finished or failed experiment: its arm, seed, the reported metrics and counts, the testbed
    diagnostics it carries, the baseline commit it ran on (as exp_show names it), its experiment's name and
    commit, (once llgbm.study.run_archive keys it) the key of what made it and the machine it ran on, and for a
    failed one (no metrics) why it stopped: a run that diverged is the arm's result too, so it is counted,
    never silently dropped."""
    arm: Arm
    seed: int
    metrics: dict[str, float | None]
    counts: dict[str, int | None]
    train_tasks: int | None
    diagnostics: dict[str, float]
    baseline: str | None
    name: str | None = None
    rev: str | None = None
    key: str | None = None
    machine: str | None = None
    failure: str | None = None


def collect_runs(rows: list[dict]) -> list[Run]:
    """Finished and failed experiments of exp_show rows. Baseline rows (the workspace and commits) are left
    out, but an experiment row follows its baseline commit's row, which names the commit. Experiments in
    state Success count with their metrics; a queued or running one shows its baseline's metrics files, not
    its own, so it is left out, and a failed one (its metrics may be partial) counts as a failure, reason
    "failed" until `failure_reasons` reads it. One (arm, seed) counts once as finished and once as failed."""
    runs: list[Run] = []
    seen: set[tuple[Arm, int, bool]] = set()
    baseline = None
    for row in rows:
        if row.get("typ") == "baseline":
            if row.get("rev") != "workspace":
                baseline = row.get("rev")
            continue
        failed = row.get("State") == FAILED_STATE
        if row.get("Experiment") is None or (row.get("State") not in FINISHED_STATES and not failed):
            continue
        seed = _param("seed", _lookup(row, "seed", PARAMS))
        if not isinstance(seed, int):
            continue
        arm = arm_of({k: _lookup(row, k, PARAMS) for k in ARM_KEYS})
        if (arm, seed, failed) in seen:
            continue
        if failed:
            seen.add((arm, seed, failed))
            runs.append(Run(arm=arm, seed=seed, metrics={name: None for name in KEY_METRICS},
                            counts={name: None for name in COUNT_METRICS}, train_tasks=None, diagnostics={},
                            baseline=baseline, name=row.get("Experiment"), rev=row.get("rev"), failure="failed"))
            continue
        metrics = {name: _number(_lookup(row, metric, METRIC_FILES.get(name, EVALUATION)))
                   for name, (_, metric) in KEY_METRICS.items()}
        if metrics["heldout_accuracy"] is None:
            continue
        seen.add((arm, seed, failed))
        diagnostics = {}
        for heldout, seen_metric in DIAGNOSTIC_BASELINES.values():
            for metric in (heldout, seen_metric):
                value = _number(_lookup(row, metric, DIAGNOSTICS)) if metric else None
                if value is not None:
                    diagnostics[metric] = value
        runs.append(Run(arm=arm, seed=seed, metrics=metrics,
                        counts={name: _count(_lookup(row, metric, EVALUATION)) for name, metric in COUNT_METRICS.items()},
                        train_tasks=_count(_lookup(row, TRAIN_TASKS_METRIC)), diagnostics=diagnostics,
                        baseline=baseline, name=row.get("Experiment"), rev=row.get("rev")))
    return runs


def failure_text(log: str) -> str:
    """Why a run stopped, from its `dvc queue logs`: the first message of llgbm's own ("error: ..."; a
    progress bar may share its line), else DVC's last ERROR line, else "failed (no error in its log)"."""
    own = re.findall(r"(?<![A-Za-z])error: ([^\r\n]+)", log)
    if own:
        return own[0].strip()
    dvc_errors = re.findall(r"ERROR: ([^\r\n]+)", log)
    return dvc_errors[-1].strip() if dvc_errors else "failed (no error in its log)"


def failure_reasons(runs: list[Run], repo: str = ".") -> list[Run]:
    """`runs` with each failed run's reason read from DVC's queue log (kept only on the machine that ran
    it, hence recorded in the run archive)."""
    done = []
    for run in runs:
        if run.failure is not None and run.name:
            result = subprocess.run([sys.executable, "-m", "dvc", "queue", "logs", run.name], cwd=repo,
                                    capture_output=True, text=True, errors="replace")
            reason = (failure_text(result.stdout + result.stderr) if result.returncode == 0
                      else "failed (its queue log is gone)")
            run = replace(run, failure=reason)
        done.append(run)
    return done


def group_runs(runs: list[Run]) -> dict[Arm, dict[int, Run]]:
    """The finished runs by arm and seed (failed runs: `failed_seeds`)."""
    groups: dict[Arm, dict[int, Run]] = {}
    for run in runs:
        if run.failure is None:
            groups.setdefault(run.arm, {})[run.seed] = run
    return groups


def failed_seeds(runs: list[Run]) -> dict[Arm, dict[int, Run]]:
    """The failed runs by arm and seed, of the seeds that did not also finish (a rerun that finished
    counts as that seed's result)."""
    finished = {(r.arm, r.seed) for r in runs if r.failure is None}
    groups: dict[Arm, dict[int, Run]] = {}
    for run in runs:
        if run.failure is not None and (run.arm, run.seed) not in finished:
            groups.setdefault(run.arm, {}).setdefault(run.seed, run)
    return groups


# --- naming and pairing arms ------------------------------------------------------------------------

def objective_of(arm: Mapping[str, Any]) -> str:
    """An arm's objective in words: weight-only, delta (with its variants), KL, and their "-only" forms."""
    if not arm.get("lambda_delta"):
        return "weight-only"
    only = "-only" if arm.get("train.lambda_weights") == 0 else ""
    if arm.get("behaviour_loss") == "kl":
        return f"KL{only}"
    words = ["per-probe"] if arm.get("delta_reduce") == "per_probe" else []
    layers = arm.get("delta_layers")
    if layers == "all":
        words.append("multi-layer")
    name = " ".join(words + [f"delta{only}"])
    if layers not in (None, "last", "all"):
        name += " at layers " + ", ".join(str(layer) for layer in layers)
    return name


# Knobs the objective's name says (or, for the task count, a column of its own).
_NAMED_KNOBS = ("behaviour_loss", "delta_reduce", "delta_layers", "max_training_tasks")


def arm_knobs(arms: list[Arm]) -> dict[Arm, str]:
    """Per arm, the knobs its name does not say that differ from the most common value among `arms`."""
    common = {key: Counter(dict(a)[key] for a in arms).most_common(1)[0][0] for key in ARM_KEYS} if arms else {}
    knobs = {}
    for arm in arms:
        values = dict(arm)
        objective = objective_of(values)
        implied = set(_NAMED_KNOBS)
        if objective == "weight-only":
            implied.add("lambda_delta")
        if objective.endswith("-only") or "-only " in objective:
            implied |= {"train.lambda_weights", "loss_balance"}
        knobs[arm] = ", ".join(f"{k}={_text(v)}" for k, v in arm if k not in implied and v != common[k])
    return knobs


def _text(value: Any) -> str:
    return "[" + ", ".join(str(v) for v in value) + "]" if isinstance(value, tuple) else str(value)


def reference_of(arm: Arm, arms: list[Arm]) -> Arm | None:
    """The weight-only arm with the same max_training_tasks and otherwise the most knobs equal to `arm`'s
    (with lambda_delta = 0 the behaviour knobs do not train)."""
    task_count = dict(arm)["max_training_tasks"]
    candidates = sorted((a for a in arms if objective_of(dict(a)) == "weight-only"
                         and dict(a)["max_training_tasks"] == task_count), key=str)
    return max(candidates, key=lambda a: sum(x == y for x, y in zip(a, arm)), default=None)


def _arm_order(arm: Arm) -> tuple:
    """Rows by training-task count (all last), then objective in the study's order, then knobs."""
    values = dict(arm)
    count = values["max_training_tasks"]
    objective = objective_of(values)
    rank = list(OBJECTIVES).index(objective) if objective in OBJECTIVES else len(OBJECTIVES)
    return (count is None, count or 0, rank, objective, str(arm))


# --- the report -------------------------------------------------------------------------------------

def _mean_cell(values: list[float], seeds: int) -> str:
    if not values:
        return "—"
    mean, half = mean_ci(values)
    text = f"{mean:.3f} ± {half:.3f}" if half is not None else f"{mean:.3f} (1 seed, no CI)"
    return text if len(values) == seeds else f"{text} ({len(values)} of {seeds} seeds)"


def _range_cell(values: list[float], seeds: int) -> str:
    """A ratio that can span orders of magnitude across seeds: its range, not a t interval."""
    if not values:
        return "—"
    low, high = min(values), max(values)
    text = f"{low:.3g}" if low == high else f"{low:.3g}–{high:.3g}"
    return text if len(values) == seeds else f"{text} ({len(values)} of {seeds} seeds)"


def _paired(bucket: dict[int, Run], reference: dict[int, Run], metric: str) -> tuple[float, float | None, int] | None:
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


def _diagnostics_by_count(runs: list[Run],
                          count_of: Callable[[Run], int | None]) -> dict[int | None, dict[str, list[float]]]:
    """Each testbed diagnostic's values over `runs`, by the training-task count `count_of` gives a run."""
    by_count: dict[int | None, dict[str, list[float]]] = {}
    for run in runs:
        for metric, value in run.diagnostics.items():
            by_count.setdefault(count_of(run), {}).setdefault(metric, []).append(value)
    return by_count


def _diagnostic_rows(runs: list[Run], fallback: Mapping[str, Any] | None, width: int) -> list[str]:
    """The testbed's baselines as extra rows: per max_training_tasks where the diagnostics differ between
    counts, once ("any") where they do not; from `fallback` (the workspace's diagnostics) if no run has them."""
    by_count = _diagnostics_by_count(runs, lambda run: dict(run.arm)["max_training_tasks"])
    if by_count:
        tables = {_task_count_text(c): v for c, v in sorted(by_count.items(), key=lambda i: (i[0] is None, i[0] or 0))}
        distinct = {str(sorted((k, sorted(set(v))) for k, v in table.items())) for table in tables.values()}
        if len(distinct) == 1:
            tables = {"any": next(iter(tables.values()))}
    elif fallback:
        tables = {"workspace": {k: [float(v)] for k, v in fallback.items() if _number(v) is not None}}
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


def comparison_report(runs: list[Run], diagnostics_fallback: Mapping[str, Any] | None = None) -> str:
    """The markdown table: each arm's metrics over seeds and its paired difference from the weight-only arm
    of its training-task count, then the testbed's baselines as extra rows, then how to read it. `runs` are
    of one key (llgbm.study.run_archive): runs made by other code or params are not comparable."""
    groups, failed = group_runs(runs), failed_seeds(runs)
    if not groups and not failed:
        return "No finished experiments with evaluation metrics.\n"
    arms = sorted(set(groups) | set(failed), key=_arm_order)
    knobs = arm_knobs(arms)
    header = ["arm", "knobs", "max training tasks", "seeds", "tasks (held-out / seen)",
              *(KEY_METRICS[m][0] for m in ("heldout_accuracy", "seen_accuracy", "heldout_gain_share")),
              "gain share defined (per seed)",
              *(KEY_METRICS[m][0] for m in ("heldout_cosine", "heldout_cosine_centred", "weight_norm_ratio")),
              *(f"Δ {KEY_METRICS[m][0]} vs weight-only (paired)" for m in PAIRED_METRICS),
              f"Δ held-out accuracy detectable ({DETECTION_POWER:.0%} power)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for arm in arms:
        bucket = groups.get(arm, {})
        reference = reference_of(arm, list(groups))
        if reference is None:
            diffs = ["no weight-only run"] * (len(PAIRED_METRICS) + 1)
        elif reference == arm:
            diffs = ["reference"] * (len(PAIRED_METRICS) + 1)
        else:
            paired = {m: _paired(bucket, groups[reference], m) for m in PAIRED_METRICS}
            diffs = [*(_paired_cell(paired[m]) for m in PAIRED_METRICS), _detectable_cell(paired["heldout_accuracy"])]
        n, n_failed = len(bucket), len(failed.get(arm, {}))
        # .get: a run archived before a metric joined the report lacks it
        metric_cells = {m: (_range_cell if m in RANGE_METRICS else _mean_cell)(
                            [r.metrics[m] for r in bucket.values() if r.metrics.get(m) is not None], n)
                        for m in KEY_METRICS}
        counts = {c: [r.counts[c] for r in bucket.values()] for c in COUNT_METRICS}
        seeds_cell = f"{n} (+{n_failed} failed)" if n_failed else str(n)
        cells = [objective_of(dict(arm)), knobs[arm] or "—", _task_count_text(dict(arm)["max_training_tasks"]), seeds_cell,
                 f"{_counts_cell(counts['heldout_tasks'])} / {_counts_cell(counts['seen_tasks'])}",
                 metric_cells["heldout_accuracy"], metric_cells["seen_accuracy"], metric_cells["heldout_gain_share"],
                 _counts_cell(counts["gain_defined"]), metric_cells["heldout_cosine"],
                 metric_cells["heldout_cosine_centred"], metric_cells["weight_norm_ratio"], *diffs]
        lines.append("| " + " | ".join(cells) + " |")
    lines += _diagnostic_rows(runs, diagnostics_fallback, len(header))
    notes = ["",
             "Each cell: mean ± half-width of the 95% Student's t interval over seeds (df = seeds - 1). The Δ columns "
             "pair each arm with the weight-only arm of the same max training tasks by seed: only seeds present in "
             "both count (their number shown), and the interval is that of the mean per-seed difference. "
             f"Detectable: the true held-out difference a two-sided 5% paired t test over those seeds would find "
             f"with {DETECTION_POWER:.0%} power, (t(0.975) + t({DETECTION_POWER:g})) x sd / sqrt(seeds) from the arm's "
             "own per-seed differences: an interval around 0 rules out effects of about that size, not smaller "
             "ones. Tasks: "
             "the held-out and seen tasks each mean covers, from the evaluation's `heldout.tasks` / `seen.tasks` "
             "(? where a run did not record them). Delta cosine on the evaluation probe set, raw and centred on "
             "the mean training-teacher delta. Weight norm: the generated weights' norm over their teachers' in the "
             "last training batch (`weight_norm_ratio` of `results/train/metrics.json`), its range over seeds. "
             "Baseline rows: the testbed's diagnostics "
             "(`results/diagnostics/metrics.json`; no seed, so no interval; a range where runs differ). "
             "Training curves side by side: `dvc plots diff <experiment names>`."]
    if failed:
        notes += ["", "Failed runs (the seeds counted as failed above; no metric of theirs is in any mean or "
                  "difference, so an arm's numbers cover only the seeds that finished):"]
        for arm in arms:
            for seed, run in sorted(failed.get(arm, {}).items()):
                label = objective_of(dict(arm)) + (f" ({knobs[arm]})" if knobs[arm] else "")
                notes.append(f"- {label}, max training tasks {_task_count_text(dict(arm)['max_training_tasks'])}, "
                             f"seed {seed} ({run.name}): {run.failure}")
    return "\n".join(lines + notes) + "\n"


def study_seeds(runs: list[Run]) -> list[int]:
    return sorted({run.seed for run in runs})


def baseline_revs(runs: list[Run]) -> list[str]:
    """The baseline commits (as exp_show names them: a branch or a short hash) of the finished runs."""
    return sorted({run.baseline for run in runs if run.baseline is not None})


def resolve_commit(repo: str, rev: str) -> str | None:
    """A revision's short commit hash in `repo`; None where git cannot resolve it."""
    result = subprocess.run(["git", "-C", repo, "rev-parse", "--short", f"{rev}^{{commit}}"],
                            capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 and result.stdout.strip() else None


def experiment_commits(repo: str, runs: list[Run]) -> list[str]:
    """The commits the finished experiments ran on; where the runs name none, HEAD of `repo`, said so."""
    revs = baseline_revs(runs)
    if not revs:
        head = resolve_commit(repo, "HEAD")
        return [f"{head} (HEAD of {repo}: the experiments name no baseline)" if head else "unknown (no git commit)"]
    commits = []
    for rev in revs:
        commit = resolve_commit(repo, rev)
        commits.append(rev if commit is None or commit == rev else f"{commit} ({rev})")
    return commits


def readme_block(report: str, *, machine: str, seeds: list[int], commits: list[str], command: str,
                 plot: str | None) -> str:
    """What goes between README's markers: provenance, the table and the plot."""
    lines = [f"_Written by `{command}`; edit the command, not this text._", "",
             f"- machine: {machine}",
             f"- seeds: {', '.join(str(s) for s in seeds) or 'none'}",
             f"- experiments ran on commit {', '.join(commits)}", "", report.rstrip("\n")]
    if plot is not None:
        lines += ["", f"![held-out accuracy against the number of training tasks, per objective]({plot})"]
    return "\n".join(lines)


def markers(name: str) -> tuple[str, str]:
    """The README comment lines around a generated block named `name`."""
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def replace_marked(text: str, block: str, path: str, name: str = "compare") -> str:
    """`text` with what lies between the markers of `name` (README_BEGIN/README_END for the comparison)
    replaced by `block`."""
    begin_mark, end_mark = markers(name)
    begin, end = text.find(begin_mark), text.find(end_mark)
    if begin < 0 or end < 0 or end < begin or text.count(begin_mark) != 1 or text.count(end_mark) != 1:
        raise LlgbmError(f"{path}: needs one '{begin_mark}' line and, after it, one '{end_mark}' line "
                         "around the generated results")
    start = begin + len(begin_mark)
    return text[:start] + "\n" + block + "\n" + text[end:]


# --- the plot ---------------------------------------------------------------------------------------

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
    arms = sorted(groups, key=_arm_order)
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


# The testbed's references drawn beside the arms: label -> held-out accuracy metric of the diagnostics.
PLOT_REFERENCES = {"base model": "base_heldout_accuracy_mean",
                   "multi-task LoRA (reference)": "multitask_heldout_accuracy_mean"}


def reference_points(runs: list[Run]) -> dict[str, list[tuple[int, float]]]:
    """Per testbed reference (PLOT_REFERENCES): (training tasks, held-out accuracy) from the diagnostics the
    runs of each training-task count read, the mean where runs of a count differ (one key: they do not).
    What the plot needs to say whether an arm's line is at the base's level or short of the headroom its
    task count leaves."""
    by_count = _diagnostics_by_count(runs, lambda run: training_task_count([run]))
    counts = sorted(count for count in by_count if count is not None)  # None: a run of unknown task count
    points = {label: [(count, statistics.fmean(by_count[count][metric])) for count in counts
                      if metric in by_count[count]] for label, metric in PLOT_REFERENCES.items()}
    return {label: line for label, line in points.items() if line}


def chance_level(runs: list[Run], fallback: Mapping[str, Any] | None = None) -> float | None:
    for run in runs:
        if "heldout_chance_mean" in run.diagnostics:
            return run.diagnostics["heldout_chance_mean"]
    return _number((fallback or {}).get("heldout_chance_mean"))


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
