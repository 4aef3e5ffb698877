"""Queueing the study as DVC experiments (`llgbm grid`): the arms of each part of issue 11's study (or of
the spec's old ablation grid), one `dvc exp run --queue` per arm swept over seeds, and, for --missing, the
runs that are not to be queued again."""
from __future__ import annotations

import shlex
import subprocess
from pathlib import Path
from typing import Any, Callable, Mapping

from llgbm.config import load_config, to_dict
from llgbm.infra.errors import LlgbmError

# Through the modules, not their names: tests stand in for the DVC and git calls (exp_rows, workspace_key).
from llgbm.study import experiments, run_archive
from llgbm.study.arms import ARM_KEYS, OBJECTIVES, Arm, objective_of
from llgbm.study.experiments import NO_FOLD, Replicate

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

STUDY_LAMBDAS = (0.1, 1.0, 5.0)  # lambda_delta of the delta objective
# Training-task counts (None: every training task of the fold), for the task-count curve of issue 21's
# study: weight-only, the probe delta and the task loss. The held-out set is fixed per fold; 12 is the
# smallest count that keeps a fold's held-out selectors and transforms seen in training.
STUDY_TASK_COUNTS = (12, 24, None)
TASK_COUNT_OBJECTIVES = ("weight-only", "delta", "SFT")
STUDIES = ("objectives", "lambdas", "task_counts", "all", "ablations")


# --- the arms ---------------------------------------------------------------------------------------

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


def chosen_arms(arms: list[dict[str, Any]], names: list[str] | None, study: str) -> list[dict[str, Any]]:
    """The arms whose objective (`objective_of`) is one of `names`, in the order `names` gives them (the
    queue's order, so the arms that matter most run first); every arm where `names` is None."""
    if names is None:
        return arms
    known = list(dict.fromkeys(objective_of(arm) for arm in arms))
    unknown = [name for name in names if name not in known]
    if unknown:
        raise LlgbmError(f"--arms: {', '.join(repr(n) for n in unknown)} not among the arms of --study {study}: "
                         + ", ".join(repr(n) for n in known))
    return [arm for name in dict.fromkeys(names) for arm in arms if objective_of(arm) == name]


def study_folds(params: Mapping[str, Any], chosen: list[int] | None, source: str) -> list[int] | None:
    """The held-out folds to sweep: every fold of params' heldout_folds, or `chosen` of them; None where
    params hold out a fixed heldout_tasks (then `chosen` is an error)."""
    folds = params.get("heldout_folds")
    if folds is None:
        if chosen:
            raise LlgbmError(f"{source}: --folds needs 'heldout_folds' set (it is null: the held-out set is heldout_tasks)")
        return None
    bad = [f for f in chosen or [] if not 0 <= f < folds]
    if bad:
        raise LlgbmError(f"--folds: {bad} outside 0..{folds - 1} ({source}: heldout_folds is {folds})")
    return sorted(set(chosen)) if chosen else list(range(folds))


# --- queueing ---------------------------------------------------------------------------------------

def override_value(value: Any) -> str:
    """A param value as `dvc exp run -S key=value` parses it (YAML-like: null, true, [1,2])."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(override_value(v) for v in value) + "]"
    return str(value)


def queue_commands(arms: list[dict[str, Any]], seeds: list[int], fold: int = NO_FOLD) -> list[list[str]]:
    """One `dvc exp run --queue` per arm; `-S seed=0,1,2` makes DVC queue one experiment per seed; with a
    fold, `-S heldout_fold=<fold>` (params.yaml's heldout_folds says how many there are)."""
    seed_values = ",".join(str(s) for s in seeds)
    fold_override = [] if fold == NO_FOLD else ["-S", f"heldout_fold={fold}"]
    return [["dvc", "exp", "run", "--queue", *[a for k, v in arm.items() for a in ("-S", f"{k}={override_value(v)}")],
             *fold_override, "-S", f"seed={seed_values}"] for arm in arms]


def missing_replicates(arms: list[dict[str, Any]], replicates: list[Replicate],
                       have: set[tuple[Arm, Replicate]]) -> list[tuple[dict[str, Any], list[Replicate]]]:
    """Per arm, the replicates (fold, seed) of `replicates` that `have` lacks; arms with none left are left out."""
    missing = []
    for arm in arms:
        left = [r for r in replicates if (experiments.arm_of(arm), r) not in have]
        if left:
            missing.append((arm, left))
    return missing


def replicates_of(seeds: list[int], folds: list[int] | None) -> list[Replicate]:
    """Every (fold, seed) to run: each seed in each fold, or (NO_FOLD, seed) without folds."""
    return [(fold, seed) for fold in (folds if folds is not None else [NO_FOLD]) for seed in seeds]


def queue_grid(seeds: list[int], dry_run: bool, arms: list[dict[str, Any]],
               have: set[tuple[Arm, Replicate]] | None = None, folds: list[int] | None = None) -> list[str]:
    """Queue (or with `dry_run` only print) the arms over `seeds` (in each of `folds`, where the study holds
    out folds); with `have`, only the (arm, replicate) pairs it lacks, so that a study interrupted or spread
    over sessions is finished by the same command."""
    replicates = replicates_of(seeds, folds)
    arm_replicates = missing_replicates(arms, replicates, have) if have is not None else [(arm, replicates) for arm in arms]
    lines = []
    for arm, chosen in arm_replicates:
        for fold in sorted({f for f, _ in chosen}):
            command = queue_commands([arm], [s for f, s in chosen if f == fold], fold)[0]
            lines.append(shlex.join(command))
            if not dry_run:
                subprocess.run(command, check=True)
    return lines


def queued_or_done(repo: str = ".") -> tuple[set[tuple[Arm, Replicate]], str]:
    """For `llgbm grid --missing`: the (arm, replicate) pairs not to queue again (finished or failed runs of the
    workspace's key, archived or DVC experiments, and queued or running experiments), and a line saying so."""
    archived = run_archive.load_archive(Path(repo) / run_archive.DEFAULT_ARCHIVE)
    rows = experiments.exp_rows(repo)
    key = run_archive.workspace_key(repo)
    # A failed (arm, replicate) is not queued again: the same code and params would fail the same way. Merged
    # as the comparison merges them: an archived experiment counts under the key it was recorded with.
    merged = run_archive.merge_runs(archived, run_archive.keyed(experiments.collect_runs(rows), repo)[0])[0]
    done = [r for r in merged if r.key == key]
    pending = experiments.pending_runs(rows)
    have = {(r.arm, r.replicate) for r in done} | pending
    return have, (f"--missing: {len({(r.arm, r.replicate) for r in done if r.failure is None})} finished and "
                  f"{len({(r.arm, r.replicate) for r in done if r.failure is not None})} failed runs of key {key}, "
                  f"{len(pending)} queued or running, are not queued again")


def grid(*, params: str, study: str, arm_names: list[str] | None, seeds: list[int], folds: list[int] | None,
         missing: bool, dry_run: bool, echo: Callable[[str], object]) -> None:
    """`llgbm grid`: the arms of `study` (those named `arm_names`, in that order) with every other knob at
    `params`' values, queued (with `dry_run`, only written) over `seeds` in each of `folds` (default: every
    fold of params' heldout_folds); with `missing`, only the runs the archive and DVC's experiments lack
    for the workspace's key. Each line goes to `echo` (with its newline)."""
    values = to_dict(load_config(params))
    arms = chosen_arms(study_arms(knob_defaults(values, params), study, params), arm_names, study)
    have = None
    if missing:
        have, said = queued_or_done(".")
        echo(said + "\n")
    for line in queue_grid(seeds, dry_run, arms, have, study_folds(values, folds, params)):
        echo(line + "\n")
