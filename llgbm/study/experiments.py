"""Reading the study's DVC experiments back (issue 11): `dvc exp show` rows parsed into runs (Run,
collect_runs) and into the queued or running ones, why a failed run stopped (its queue log), the runs by
arm and seed, and the git commits they ran on.

The arms themselves: llgbm.study.arms; queueing them: llgbm.study.grid; the comparison: llgbm.study.report."""
from __future__ import annotations

import ast
import math
import re
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping

import dvc.api
from dvc.exceptions import DvcException
from scmrepo.exceptions import SCMError

from llgbm.infra.errors import LlgbmError, first_line
from llgbm.study.arms import ARM_KEYS, RENAMED_KNOBS, Arm

# exp_show gives every number as a float; these knobs are integers.
INTEGER_KNOBS = ("probe_count", "max_training_tasks", "seed", "heldout_folds", "heldout_fold", "train.behaviour_adapters",
                 "train.steps", "train.lambda_weights_decay_steps", "sft.records", "generator.hidden_dim", "generator.depth",
                 "generator.prompts_per_sample")
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
    # On the validation tasks (`validation_tasks`: training tasks of the fold kept out of training), what
    # hyperparameters are chosen on (`llgbm select`); not a column of the table: the by-factor section's.
    # None for a run without validation tasks, and for one archived before they existed (`metrics.get`).
    "validation_accuracy": ("validation accuracy", "validation.accuracy.generated"),
}
TRAIN_METRICS = "results/train/metrics.json"
METRIC_FILES = {"weight_norm_ratio": TRAIN_METRICS}  # the others: EVALUATION's
COUNT_METRICS = {"heldout_tasks": "heldout.tasks", "seen_tasks": "seen.tasks",
                 "gain_defined": "heldout.defined.gain_share.generated",
                 # Tasks whose generated adapters score below chance (a generator that answers a neighbouring
                 # seen task's answers); absent from runs archived before the evaluation counted them.
                 "validation_tasks": "validation.tasks",
                 "heldout_below_chance": "heldout.below_chance.generated",
                 "validation_below_chance": "validation.below_chance.generated"}
TRAIN_TASKS_METRIC = "train_tasks"  # the number of training tasks, where a stage writes it
# The testbed's baselines (results/diagnostics/metrics.json): row name -> (held-out, seen) accuracy metric.
DIAGNOSTIC_BASELINES: dict[str, tuple[str, str | None]] = {
    "chance": ("heldout_chance_mean", None),
    "base model": ("base_heldout_accuracy_mean", None),
    "mean of training teachers": ("update_mean_teacher_heldout_accuracy_mean", None),
    "nearest training teacher": ("nearest_teacher_heldout_accuracy_mean", None),
    "k nearest training teachers": ("knearest_teachers_heldout_accuracy_mean", None),
    "task arithmetic": ("task_arithmetic_heldout_accuracy_mean", None),
    "multi-task LoRA": ("multitask_heldout_accuracy_mean", "multitask_seen_accuracy_mean"),
}
# Names changed since runs were made (issue 33), old -> new; the archive's runs and older experiments carry
# the old ones, read as the new (knobs: llgbm.study.arms.RENAMED_KNOBS). The diagnostics stage's mean of the
# training teachers' updates (B @ A):
RENAMED_DIAGNOSTICS = {"mean_teacher_heldout_accuracy_mean": "update_mean_teacher_heldout_accuracy_mean"}
# The evaluation's adapters (its metrics' last part, its per_task.json keys): the element-wise mean of the
# training teachers' A and B factors.
RENAMED_ADAPTERS = {"mean_teacher": "factor_mean_teacher"}


def renamed(values: Mapping[str, Any], renames: Mapping[str, str]) -> dict[str, Any]:
    """`values` with each old name of `renames` read as its new one, in place; where both names are present,
    the new one's value."""
    return {renames.get(k, k): v for k, v in values.items() if not (k in renames and renames[k] in values)}


# --- dvc exp show -----------------------------------------------------------------------------------

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


# While the queue sets an experiment up, its temporary git repository is empty for a moment, and exp_show,
# which reads the running ones too, fails on it (scmrepo's SCMError "Empty git repo"): a few tries apart.
EXP_SHOW_TRIES = 3
EXP_SHOW_RETRY_SECONDS = 2.0


def exp_rows(repo: str = ".", revs: list[str] | None = None) -> list[dict]:
    """exp_show's rows of the experiments of `revs`; by default, of every commit that has any (runs of other
    code are told apart by their keys, not by where they hang), else HEAD's."""
    revs = revs or experiment_baselines(repo) or None
    for attempt in range(1, EXP_SHOW_TRIES + 1):
        try:
            return dvc.api.exp_show(repo=repo, revs=revs)
        except DvcException as exc:
            raise LlgbmError(f"{repo}: dvc exp show failed ({first_line(exc)})") from None
        except SCMError as exc:
            if attempt == EXP_SHOW_TRIES:
                raise LlgbmError(f"{repo}: dvc exp show failed {EXP_SHOW_TRIES} times ({first_line(exc)}), "
                                 "each while the queue was setting up an experiment; run it again") from None
            time.sleep(EXP_SHOW_RETRY_SECONDS)
    raise AssertionError("unreachable")


def _lookup(row: Mapping[str, Any], name: str, file: str | None = None) -> Any:
    """A param or metric of an exp_show row. exp_show prefixes a name with its file ("path:name") only when
    two files share it, so: the bare name, else `file`'s, else (no file given) any file's."""
    if name in row:
        return row[name]
    if file is not None:
        return row.get(f"{file}:{name}")
    return next((value for key, value in row.items() if key.endswith(f":{name}")), None)


def _lookup_renamed(row: Mapping[str, Any], name: str, file: str | None, renames: Mapping[str, str]) -> Any:
    """`_lookup` of `name`, else (a row of older code) of its old name in `renames` (old -> new)."""
    value = _lookup(row, name, file)
    old = next((old for old, new in renames.items() if new == name), None)
    return _lookup(row, old, file) if value is None and old is not None else value


def _knobs(row: Mapping[str, Any]) -> dict[str, Any]:
    """An exp_show row's arm knobs (ARM_KEYS), each under its name or, an experiment of older code, its old one."""
    return {k: _lookup_renamed(row, k, PARAMS, RENAMED_KNOBS) for k in ARM_KEYS}


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


def metric_value(value: Any) -> float | None:
    """A metric's value; None for an absent, null (exp_show: "None") or non-finite one."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _count(value: Any) -> int | None:
    number = metric_value(value)
    return int(number) if number is not None else None


def arm_of(knobs: Mapping[str, Any]) -> Arm:
    """An arm's knobs (a study arm, params) as the arm of a run read back from exp_show."""
    return tuple((k, _param(k, knobs[k])) for k in ARM_KEYS)


# One run of an arm: (its held-out fold, NO_FOLD where the run held out params' fixed heldout_tasks; its
# seed). Runs of one replicate share the generator's initialisation, data order, evaluation prompts and
# held-out tasks, so arms are compared replicate by replicate.
Replicate = tuple[int, int]
NO_FOLD = -1


def replicate_of(row: Mapping[str, Any]) -> Replicate | None:
    """An exp_show row's (fold, seed); None where its seed is not an integer."""
    seed = _param("seed", _lookup(row, "seed", PARAMS))
    if not isinstance(seed, int):
        return None
    folds = _param("heldout_folds", _lookup(row, "heldout_folds", PARAMS))
    fold = _param("heldout_fold", _lookup(row, "heldout_fold", PARAMS)) if isinstance(folds, int) else NO_FOLD
    return (fold if isinstance(fold, int) else NO_FOLD), seed


def replicate_text(replicate: Replicate) -> str:
    fold, seed = replicate
    return f"seed {seed}" if fold == NO_FOLD else f"fold {fold}, seed {seed}"


def pending_runs(rows: list[dict]) -> set[tuple[Arm, Replicate]]:
    """The (arm, replicate) pairs of exp_show rows queued or running."""
    pending = set()
    for row in rows:
        replicate = replicate_of(row)
        if row.get("Experiment") is not None and row.get("State") in PENDING_STATES and replicate is not None:
            pending.add((arm_of(_knobs(row)), replicate))
    return pending


# --- finished and failed runs -----------------------------------------------------------------------

@dataclass(frozen=True)
class Run:
    """One finished or failed experiment: its arm, seed (and held-out fold), the reported metrics and counts, the testbed
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
    # Per evaluated task: whether it is held out, its group where the evaluation names one ("heldout",
    # "validation" or "seen"), and each compared adapter's accuracy (read from the run's
    # results/evaluate/per_task.json by llgbm.study.run_archive); None before a run is keyed.
    per_task: dict[str, dict[str, float | bool | str | None]] | None = None
    fold: int = NO_FOLD  # which of heldout_folds it held out; NO_FOLD: params' heldout_tasks

    @property
    def replicate(self) -> Replicate:
        return self.fold, self.seed


def collect_runs(rows: list[dict]) -> list[Run]:
    """Finished and failed experiments of exp_show rows. Baseline rows (the workspace and commits) are left
    out, but an experiment row follows its baseline commit's row, which names the commit. Experiments in
    state Success count with their metrics; a queued or running one shows its baseline's metrics files, not
    its own, so it is left out, and a failed one (its metrics may be partial) counts as a failure, reason
    "failed" until `failure_reasons` reads it. Every experiment is returned, even two of one arm and replicate:
    only their keys (llgbm.study.run_archive.keyed) tell whether they repeat one run (the archive then keeps
    the first and reports a repeat with other metrics) or are runs of two testbeds, which must both count."""
    runs: list[Run] = []
    baseline = None
    for row in rows:
        if row.get("typ") == "baseline":
            if row.get("rev") != "workspace":
                baseline = row.get("rev")
            continue
        failed = row.get("State") == FAILED_STATE
        if row.get("Experiment") is None or (row.get("State") not in FINISHED_STATES and not failed):
            continue
        replicate = replicate_of(row)
        if replicate is None:
            continue
        (fold, seed), arm = replicate, arm_of(_knobs(row))
        if failed:
            runs.append(Run(arm=arm, seed=seed, metrics={name: None for name in KEY_METRICS},
                            counts={name: None for name in COUNT_METRICS}, train_tasks=None, diagnostics={},
                            baseline=baseline, name=row.get("Experiment"), rev=row.get("rev"), failure="failed",
                            fold=fold))
            continue
        metrics = {name: metric_value(_lookup(row, metric, METRIC_FILES.get(name, EVALUATION)))
                   for name, (_, metric) in KEY_METRICS.items()}
        if metrics["heldout_accuracy"] is None:
            continue
        runs.append(Run(arm=arm, seed=seed, metrics=metrics,
                        counts={name: _count(_lookup(row, metric, EVALUATION)) for name, metric in COUNT_METRICS.items()},
                        train_tasks=_count(_lookup(row, TRAIN_TASKS_METRIC)), diagnostics=_diagnostics(row),
                        baseline=baseline, name=row.get("Experiment"), rev=row.get("rev"), fold=fold))
    return runs


def _diagnostics(row: Mapping[str, Any]) -> dict[str, float]:
    """The testbed's baselines (DIAGNOSTIC_BASELINES) an exp_show row carries."""
    diagnostics = {}
    for heldout, seen_metric in DIAGNOSTIC_BASELINES.values():
        for metric in (heldout, seen_metric):
            value = metric_value(_lookup_renamed(row, metric, DIAGNOSTICS, RENAMED_DIAGNOSTICS)) if metric else None
            if value is not None:
                diagnostics[metric] = value
    return diagnostics


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


# --- runs by arm, replicate and training-task count -------------------------------------------------

def group_runs(runs: list[Run]) -> dict[Arm, dict[Replicate, Run]]:
    """The finished runs by arm and replicate (failed runs: `failed_replicates`); of two of one arm and
    replicate (`runs` of one key), the first."""
    groups: dict[Arm, dict[Replicate, Run]] = {}
    for run in runs:
        if run.failure is None:
            groups.setdefault(run.arm, {}).setdefault(run.replicate, run)
    return groups


def failed_replicates(runs: list[Run]) -> dict[Arm, dict[Replicate, Run]]:
    """The failed runs by arm and replicate, of the replicates that did not also finish (a rerun that
    finished counts as that replicate's result)."""
    finished = {(r.arm, r.replicate) for r in runs if r.failure is None}
    groups: dict[Arm, dict[Replicate, Run]] = {}
    for run in runs:
        if run.failure is not None and (run.arm, run.replicate) not in finished:
            groups.setdefault(run.arm, {}).setdefault(run.replicate, run)
    return groups


def diagnostics_by_count(runs: list[Run],
                         count_of: Callable[[Run], int | None]) -> dict[int | None, dict[str, list[float]]]:
    """Each testbed diagnostic's values over `runs`, by the training-task count `count_of` gives a run."""
    by_count: dict[int | None, dict[str, list[float]]] = {}
    for run in runs:
        for metric, value in run.diagnostics.items():
            by_count.setdefault(count_of(run), {}).setdefault(metric, []).append(value)
    return by_count


def study_seeds(runs: list[Run]) -> list[int]:
    return sorted({run.seed for run in runs})


# --- the commits they ran on ------------------------------------------------------------------------

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
