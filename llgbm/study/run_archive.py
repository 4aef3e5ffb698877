"""The study's finished runs kept in git (`results/study/runs.json`), each keyed by what made it.

DVC keeps experiments as local git refs, which a fresh clone does not have, and the whole grid takes longer
than one session: `llgbm compare --record` adds every finished experiment to this file, so the study grows
across sessions and machines and the README table can be rebuilt from main alone. Nothing is ever removed
from it.

A run's key is a hash of everything that made it apart from its arm and seed: the code of every stage and
the outputs every arm shares (their hashes in the run's dvc.lock), every other param (its params.yaml), and
the libraries, precision, device and process count it trained with (its `results/train/provenance.json`).
Runs of different keys are never compared or pooled: `llgbm compare` reports one key's runs and says how
many of other keys it left out."""
from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import MISSING, asdict, replace
from pathlib import Path
from typing import Any, Mapping

import yaml

from llgbm.infra.errors import LlgbmError, first_line
from llgbm.infra.io import read_json, read_text, sha256_json, write_json_atomic
from llgbm.study.arms import ARM_KEYS, RENAMED_KNOBS
from llgbm.study.experiments import RENAMED_ADAPTERS, RENAMED_DIAGNOSTICS, Run, _param, renamed, replicate_text, resolve_commit

FORMAT = 1
DEFAULT_ARCHIVE = Path("results/study/runs.json")
LOCK = "dvc.lock"
PARAMS_FILE = "params.yaml"
TRAIN_PROVENANCE = "results/train/provenance.json"  # llgbm.recipes.train.PROVENANCE in the train stage's live dir
PER_TASK = "results/evaluate/per_task.json"  # the evaluate stage's per-task results
CODE_DIRS = ("llgbm/", "stages/")
# What of results/train/provenance.json makes a run (its machine name is recorded, not keyed).
PROVENANCE_KEYS = ("libraries", "precision", "device", "processes")
KEY_LENGTH = 16
# A run's own params: its arm's knobs, its seed and its held-out fold (folds of one heldout_folds are
# pooled, as seeds are); the key holds every other param. A knob's old name (RENAMED_KNOBS) stays one of them,
# so that an experiment of older code gets the key its archived runs have.
RUN_PARAMS = (*ARM_KEYS, *RENAMED_KNOBS, "seed", "heldout_fold")


def _has_param(params: Any, dotted: str) -> bool:
    """Whether a stage's params in dvc.lock (a nested dict) hold `dotted` or a section above it."""
    node = params
    for part in dotted.split("."):
        if not isinstance(node, Mapping):
            return True  # a section holding the param: it is read
        if part not in node:
            return False
        node = node[part]
    return True


def run_varying_stages(stages: Mapping[str, Any]) -> set[str]:
    """The stages of a dvc.lock whose outputs differ between the runs of one key: those whose params hold a
    run param, and every stage downstream of one (a dep that is another such stage's output)."""
    varying = {name for name, stage in stages.items()
               if any(_has_param(p, key) for p in (stage.get("params") or {}).values() for key in RUN_PARAMS)}
    outs = {name: {str(o.get("path")) for o in stage.get("outs") or []} for name, stage in stages.items()}
    changed = True
    while changed:
        varying_outs = set().union(*(outs[name] for name in varying))
        downstream = {name for name, stage in stages.items() if name not in varying
                      and any(str(d.get("path")) in varying_outs for d in stage.get("deps") or [])}
        varying |= downstream
        changed = bool(downstream)
    return varying


def lock_identity(lock: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Of a dvc.lock: per stage its command and the hashes of its code deps; the output hashes of the stages
    that every run of a key shares (tasks, base, teachers, embeddings: not `run_varying_stages`)."""
    stages = lock.get("stages") if isinstance(lock, Mapping) else None
    if not isinstance(stages, Mapping) or not stages:
        raise LlgbmError(f"{source}: no stages (a dvc.lock of a run of this pipeline is needed)")
    varying = run_varying_stages(stages)
    identity: dict[str, Any] = {}
    for name, stage in sorted(stages.items()):
        deps = stage.get("deps") or []
        code = {d["path"]: d.get("md5") for d in deps if str(d.get("path", "")).startswith(CODE_DIRS)}
        entry: dict[str, Any] = {"cmd": stage.get("cmd"), "code": code}
        if name not in varying:
            entry["outs"] = {o["path"]: o.get("md5") for o in stage.get("outs") or []}
        identity[name] = entry
    return identity


def shared_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """params.yaml without the run's own params (arm knobs and seed), as a nested dict."""
    def without(node: Mapping[str, Any], prefix: str) -> dict[str, Any]:
        kept = {}
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            if dotted in RUN_PARAMS:
                continue
            kept[key] = without(value, f"{dotted}.") if isinstance(value, Mapping) else value
        return kept
    return without(params, "")


def run_key(lock: Mapping[str, Any], params: Mapping[str, Any], provenance: Mapping[str, Any],
            source: str) -> str:
    missing = [k for k in PROVENANCE_KEYS if k not in provenance]
    if missing:
        raise LlgbmError(f"{source}: {TRAIN_PROVENANCE} lacks {', '.join(missing)}")
    made_of = {"lock": lock_identity(lock, f"{source}: {LOCK}"), "params": shared_params(params),
               "provenance": {k: provenance[k] for k in PROVENANCE_KEYS}}
    return sha256_json(made_of)[:KEY_LENGTH]


def _parse(text: str, path: str, source: str) -> Any:
    try:
        return json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise LlgbmError(f"{source}: {path} does not parse ({first_line(exc)})") from None


def _key_of(texts: Mapping[str, str], source: str) -> tuple[str, Mapping[str, Any]]:
    """(key, provenance) from the texts of a run's dvc.lock, params.yaml and train provenance."""
    parsed = {path: _parse(texts[path], path, source) for path in (LOCK, PARAMS_FILE, TRAIN_PROVENANCE)}
    return run_key(parsed[LOCK], parsed[PARAMS_FILE], parsed[TRAIN_PROVENANCE], source), parsed[TRAIN_PROVENANCE]


def _git_file(repo: str, rev: str, path: str) -> str | None:
    result = subprocess.run(["git", "-C", repo, "show", f"{rev}:{path}"], capture_output=True, text=True)
    return result.stdout if result.returncode == 0 else None


def key_of_commit(repo: str, rev: str) -> tuple[str, Mapping[str, Any]] | None:
    """(key, provenance) of the run an experiment commit holds; None where it holds no train provenance
    (an experiment of code older than the provenance file)."""
    texts = {path: _git_file(repo, rev, path) for path in (LOCK, PARAMS_FILE, TRAIN_PROVENANCE)}
    if texts[TRAIN_PROVENANCE] is None:
        return None
    if texts[LOCK] is None or texts[PARAMS_FILE] is None:
        raise LlgbmError(f"{repo}: experiment commit {rev} has no {LOCK} or {PARAMS_FILE}")
    return _key_of(texts, f"{repo}@{rev}")  # type: ignore[arg-type]


def workspace_key(repo: str) -> str:
    """The key of the run in `repo`'s workspace (the default after `dvc repro`): what new runs made there
    with the same code, shared params and libraries get."""
    root = Path(repo)
    files = {path: root / path for path in (LOCK, PARAMS_FILE, TRAIN_PROVENANCE)}
    for path, file in files.items():
        if not file.is_file():
            raise LlgbmError(f"{file}: not found; run `dvc repro` first (the comparison reports the runs made "
                             "with the workspace's code and params), or name a key with --key")
    return _key_of({path: read_text(file, path) for path, file in files.items()}, str(root))[0]


# --- the archive file ---------------------------------------------------------------------------------

def run_to_json(run: Run) -> dict[str, Any]:
    entry = asdict(run)
    entry["arm"] = {k: list(v) if isinstance(v, tuple) else v for k, v in run.arm}
    return entry


def run_from_json(entry: Mapping[str, Any], source: str) -> Run:
    """An archived run as today's code names it: a knob, diagnostic or adapter renamed since the run was
    recorded is read under its new name (the file itself keeps what was written)."""
    try:
        # A knob added to ARM_KEYS after a run was archived did not exist for it: None (its key, made by
        # older code, keeps it apart from every newer run).
        knobs = renamed(entry["arm"], RENAMED_KNOBS)
        arm = tuple((k, _param(k, knobs.get(k))) for k in ARM_KEYS)
        # A field with a default (failure, added later) may be absent from runs recorded before it.
        fields = {name: entry[name] if name in entry or field.default is MISSING else field.default
                  for name, field in Run.__dataclass_fields__.items() if name != "arm"}
        fields["diagnostics"] = renamed(fields["diagnostics"], RENAMED_DIAGNOSTICS)
        if fields["per_task"] is not None:
            fields["per_task"] = {task: renamed(methods, RENAMED_ADAPTERS) for task, methods in fields["per_task"].items()}
    except (KeyError, TypeError, AttributeError) as exc:
        raise LlgbmError(f"{source}: a run lacks {exc} (not a run of this archive's format)") from None
    return Run(arm=arm, **fields)


def load_archive(path: Path) -> list[Run]:
    """The archived runs; none where the file does not exist yet."""
    path = Path(path)
    if not path.exists():
        return []
    value = read_json(path, "run archive")
    if not isinstance(value, Mapping) or value.get("format") != FORMAT or not isinstance(value.get("runs"), list):
        raise LlgbmError(f"{path}: not a run archive of format {FORMAT} (an object with 'format' and 'runs')")
    return [run_from_json(entry, str(path)) for entry in value["runs"]]


def save_archive(path: Path, runs: list[Run]) -> None:
    ordered = sorted(runs, key=lambda r: (str(r.key), str(r.arm), r.replicate, r.failure is not None))
    write_json_atomic(Path(path), {"format": FORMAT, "runs": [run_to_json(r) for r in ordered]})


def identity(run: Run) -> tuple:
    """A finished run and a failure of the same key, arm and replicate are both kept (a run killed by the
    machine may finish when queued again; the report then counts the finished one)."""
    return (run.key, run.arm, run.replicate, run.failure is not None)


def _experiment(run: Run) -> tuple[str, bool] | None:
    """The experiment a run is (its commit, and whether it failed); None for a run that names no commit."""
    return (run.rev, run.failure is not None) if run.rev else None


def merge_runs(archived: list[Run], new: list[Run]) -> tuple[list[Run], list[tuple[Run, Run]]]:
    """The archive with each new run added that it lacks, neither the same experiment (its commit) nor of an
    identity it holds; and the (archived, new) pairs of finished runs whose metrics differ although their key,
    arm and seed agree: the same inputs gave another result, which a reader must hear about. The archived one
    is kept: nothing recorded is replaced (a metric it lacks is added from the same experiment, read again).
    An experiment the archive holds stays under the key and arm it was recorded with, even where today's code
    keys or reads it otherwise (a knob that joined ARM_KEYS since is outside today's key, and the archived
    run lacks it): it is counted once, as recorded."""
    merged = list(archived)
    by_identity = {identity(r): r for r in archived}
    by_experiment = {_experiment(r): r for r in archived if r.rev}
    disagreements = []
    for run in new:
        old = by_experiment.get(_experiment(run)) or by_identity.get(identity(run))
        if old is None:
            merged.append(run)
            by_identity[identity(run)] = run
            if run.rev:
                by_experiment[_experiment(run)] = run
            continue
        shared = set(old.metrics) & set(run.metrics)
        if run.failure is None and any(old.metrics[m] != run.metrics[m] for m in shared):
            disagreements.append((old, run))
        elif run.rev == old.rev and (_gained(old.metrics, run.metrics) or _gained(old.counts, run.counts)
                                     or (old.per_task is None and run.per_task)):
            # The same experiment read again where the report has gained a metric or count (or the per-task
            # results): recorded values stay, what is new is added from the run's own commit (a metric the
            # run does not have, None, is not added: an older run's entry stays as it was).
            filled = replace(old, metrics={**_gained(old.metrics, run.metrics), **old.metrics},
                             counts={**_gained(old.counts, run.counts), **old.counts},
                             per_task=old.per_task or run.per_task)
            merged[merged.index(old)] = by_identity[identity(old)] = filled
            if old.rev:
                by_experiment[_experiment(old)] = filled
    return merged, disagreements


def _gained(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """What `new` holds that `old` lacks, None values left out."""
    return {name: value for name, value in new.items() if name not in old and value is not None}


def new_failures(archived: list[Run], runs: list[Run]) -> list[Run]:
    """The failed runs of `runs` (keyed) that the archive does not hold yet: those whose reason is to be read
    from DVC's queue log."""
    known = {identity(r) for r in archived}
    recorded = {_experiment(r) for r in archived if r.rev}
    return [r for r in runs if r.failure is not None and identity(r) not in known and _experiment(r) not in recorded]


def _code_matches_lock(repo: str, rev: str) -> bool:
    """Whether every code dep's md5 in `rev`'s dvc.lock is that of the file `rev` holds. A failed experiment's
    commit is the workspace as queued, with the dvc.lock of the run before it: its key stands for its code
    only where that code is what the lock says (DVC's md5 of a file is that of its bytes)."""
    lock = yaml.safe_load(_git_file(repo, rev, LOCK) or "") or {}
    for stage in (lock.get("stages") or {}).values():
        for dep in stage.get("deps") or []:
            path = str(dep.get("path", ""))
            if path.startswith(CODE_DIRS):
                result = subprocess.run(["git", "-C", repo, "show", f"{rev}:{path}"], capture_output=True)
                if result.returncode != 0 or hashlib.md5(result.stdout).hexdigest() != dep.get("md5"):
                    return False
    return True


# The groups an evaluation's per_task.json names (its "group"; older evaluations only say "heldout").
TASK_GROUPS = ("heldout", "validation", "seen")


def per_task_accuracies(per_task: Any, source: str) -> dict[str, dict[str, float | bool | str | None]]:
    """Of an evaluation's per_task.json: per task, whether it is held out, its group where the evaluation
    names one (TASK_GROUPS: an evaluation with validation tasks), and each adapter's accuracy (an adapter
    renamed since, RENAMED_ADAPTERS, under its new name)."""
    if not isinstance(per_task, Mapping):
        raise LlgbmError(f"{source}: {PER_TASK} is not an object of tasks")
    out: dict[str, dict[str, float | bool | str | None]] = {}
    for task, entry in per_task.items():
        if not (isinstance(entry, Mapping) and isinstance(entry.get("heldout"), bool)):
            raise LlgbmError(f"{source}: {PER_TASK} task '{task}' lacks 'heldout'")
        group = entry.get("group")
        if group is not None and (group not in TASK_GROUPS or (group == "heldout") != entry["heldout"]):
            raise LlgbmError(f"{source}: {PER_TASK} task '{task}': group {group!r} is not one of "
                             f"{', '.join(TASK_GROUPS)} agreeing with heldout {entry['heldout']}")
        accuracies = {name: value.get("accuracy") for name, value in entry.items()
                      if isinstance(value, Mapping) and "accuracy" in value}
        out[task] = {"heldout": entry["heldout"], **({"group": group} if group is not None else {}),
                     **renamed(accuracies, RENAMED_ADAPTERS)}
    return out


def _per_task_of_commit(repo: str, rev: str) -> dict[str, dict[str, float | bool | str | None]] | None:
    text = _git_file(repo, rev, PER_TASK)
    return None if text is None else per_task_accuracies(_parse(text, PER_TASK, f"{repo}@{rev}"), f"{repo}@{rev}")


def keyed(runs: list[Run], repo: str) -> tuple[list[Run], list[Run]]:
    """Each experiment's run with its key (read from its commit), the machine it recorded and, as its
    baseline, the commit it ran on (its experiment commit's parent: exp_show may name a branch, which
    moves); and the runs that cannot be keyed (their commit holds no train provenance, or, failed, code
    that its dvc.lock does not describe)."""
    done, unkeyed = [], []
    for run in runs:
        found = key_of_commit(repo, run.rev) if run.rev else None
        if found is None or (run.failure is not None and not _code_matches_lock(repo, str(run.rev))):
            unkeyed.append(run)
            continue
        key, provenance = found
        baseline = resolve_commit(repo, f"{run.rev}^") or run.baseline
        per_task = _per_task_of_commit(repo, str(run.rev)) if run.failure is None else None
        done.append(replace(run, key=key, machine=provenance.get("machine"), baseline=baseline, per_task=per_task))
    return done, unkeyed


def archive_notes(key: str, runs: list[Run], unkeyed: list[Run], disagreements: list[tuple[Run, Run]],
                  archive: Path) -> str:
    """What the report's table covers and what it left out, as lines under it."""
    selected = [r for r in runs if r.key == key]
    others: dict[str, int] = {}
    for run in runs:
        if run.key != key:
            others[str(run.key)] = others.get(str(run.key), 0) + 1
    machines = sorted({r.machine for r in selected if r.machine})
    lines = ["", f"Runs of key `{key}`: {len(selected)} of the {len(runs)} (finished or failed) read from the archive "
             f"`{archive.as_posix()}` and DVC's experiments, made by the same code, shared outputs, other params "
             f"and libraries; ran on {'; '.join(machines) or 'an unrecorded machine'}."]
    if others:
        lines.append("Left out, made by other code, params or libraries: "
                     + ", ".join(f"{n} of key `{k}`" for k, n in sorted(others.items())) + ".")
    if unkeyed:
        lines.append(f"Left out: {len(unkeyed)} experiments that cannot be keyed (their commit records no "
                     f"`{TRAIN_PROVENANCE}`, code older than the run archive, or a failed one's code differs from "
                     f"its dvc.lock): {', '.join(sorted(str(r.name) for r in unkeyed))}.")
    for old, new in disagreements:
        lines.append(f"**Not reproduced:** experiment {new.name} ({replicate_text(new.replicate)}) repeats archived run {old.name} "
                     f"of the same key and arm with other metrics (held-out accuracy {new.metrics.get('heldout_accuracy')} "
                     f"vs {old.metrics.get('heldout_accuracy')}); the archived one is kept.")
    return "\n".join(lines) + "\n"
