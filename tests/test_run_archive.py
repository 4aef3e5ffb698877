"""The run archive: keys from what made a run, nothing recorded replaced or lost, bad files named."""
from __future__ import annotations

import copy
import hashlib
import json
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

import llgbm.study.arms as arms
import llgbm.study.experiments as experiments
from llgbm.infra.errors import LlgbmError
from llgbm.study.compare import compare
from llgbm.study.experiments import Run
from llgbm.study.run_archive import (
    key_of_commit,
    keyed,
    load_archive,
    merge_runs,
    new_failures,
    per_task_accuracies,
    run_key,
    run_to_json,
    save_archive,
    workspace_key,
)

LOCK = {"schema": "2.0", "stages": {
    "tasks": {"cmd": "python stages/tasks.py", "deps": [{"path": "stages/tasks.py", "md5": "a1"},
                                                        {"path": "llgbm/tasks.py", "md5": "a2"}],
              "params": {"params.yaml": {"tasks": {"seed": 0}}}, "outs": [{"path": "data/tasks.json", "md5": "t1"}]},
    "train": {"cmd": "python stages/train.py", "deps": [{"path": "llgbm/train.py", "md5": "b1"},
                                                        {"path": "data/tasks.json", "md5": "t1"}],
              "params": {"params.yaml": {"seed": 0, "lambda_delta": 1.0,
                                         "train": {"steps": 10, "batch_size": 8, "lambda_weights": 1.0}}},
              "outs": [{"path": "models/generator", "md5": "g1"}]}}}
PARAMS = {"seed": 0, "lambda_delta": 1.0, "tasks": {"seed": 0}, "train": {"steps": 10, "batch_size": 8, "lambda_weights": 1.0}}
DEFAULT_ARCHIVE_IN_REPO = Path(__file__).resolve().parents[1] / "results" / "study" / "runs.json"
# The generator's hyperparameters, arm knobs since issue 34's validation runs (recorded without them).
LEVERS = ("train.weight_decay", "train.steps", "train.learning_rate", "train.lambda_weights_decay_steps", "sft.records",
          "generator.hidden_dim", "generator.depth", "generator.prompts_per_sample")
PROVENANCE = {"libraries": {"torch": "2.13.0"}, "precision": "no", "device": "cpu", "processes": 1, "machine": "m1"}


def _key(lock: dict = LOCK, params: dict = PARAMS, provenance: dict = PROVENANCE) -> str:
    return run_key(lock, params, provenance, "test")


def _changed(value: dict, path: list, new: object) -> dict:
    changed = copy.deepcopy(value)
    node = changed
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = new
    return changed


def test_key_ignores_the_run_and_its_machine_but_not_what_made_it() -> None:
    key = _key()
    # the run's own params (arm knobs, seed), outputs that differ per arm, the machine's name: same key
    assert _key(params={**PARAMS, "seed": 3, "lambda_delta": 0.0, "train": {**PARAMS["train"], "lambda_weights": 0.0}}) == key
    assert _key(params=_changed(PARAMS, ["train", "steps"], 20)) == key  # an arm knob since issue 34's runs
    assert _key(lock=_changed(LOCK, ["stages", "train", "outs", 0, "md5"], "g2")) == key
    assert _key(lock=_changed(LOCK, ["stages", "train", "params", "params.yaml", "seed"], 4)) == key
    assert _key(provenance={**PROVENANCE, "machine": "m2"}) == key
    # code, a shared output (every arm trains on it), another param, libraries, precision: another key
    assert _key(lock=_changed(LOCK, ["stages", "train", "deps", 0, "md5"], "b2")) != key
    assert _key(lock=_changed(LOCK, ["stages", "tasks", "deps", 0, "md5"], "a9")) != key
    assert _key(lock=_changed(LOCK, ["stages", "tasks", "outs", 0, "md5"], "t2")) != key
    assert _key(params=_changed(PARAMS, ["train", "batch_size"], 16)) != key
    assert _key(provenance={**PROVENANCE, "libraries": {"torch": "2.14.1"}}) != key
    assert _key(provenance={**PROVENANCE, "precision": "bf16"}) != key
    with pytest.raises(LlgbmError, match="lacks precision"):
        _key(provenance={k: v for k, v in PROVENANCE.items() if k != "precision"})
    with pytest.raises(LlgbmError, match="no stages"):
        _key(lock={"schema": "2.0"})


def test_folds_pool_under_one_key_and_what_depends_on_the_split_varies() -> None:
    """A run's held-out fold is its own (like its seed): the split stage that reads it and every stage
    downstream of the split (the diagnostics' multi-task LoRA) vary within a key; heldout_folds does not."""
    from llgbm.study.run_archive import run_varying_stages

    lock = copy.deepcopy(LOCK)
    lock["stages"]["split"] = {"cmd": "python stages/split.py", "deps": [{"path": "data/tasks.json", "md5": "t1"}],
                               "params": {"params.yaml": {"heldout_folds": 5, "heldout_fold": 0}},
                               "outs": [{"path": "data/split.json", "md5": "s0"}]}
    lock["stages"]["diagnostics"] = {"cmd": "python stages/diagnostics.py",
                                     "deps": [{"path": "data/split.json", "md5": "s0"}],
                                     "params": {"params.yaml": {"diagnostics": {"steps": 1}}},
                                     "outs": [{"path": "results/diagnostics", "md5": "d0"}]}
    assert run_varying_stages(lock["stages"]) == {"split", "diagnostics", "train"}
    params = {**PARAMS, "heldout_folds": 5, "heldout_fold": 0}
    key = _key(lock, params)
    other_fold = _changed(_changed(lock, ["stages", "split", "outs", 0, "md5"], "s1"),
                          ["stages", "diagnostics", "outs", 0, "md5"], "d1")
    other_fold["stages"]["diagnostics"]["deps"][0]["md5"] = "s1"
    assert _key(other_fold, {**params, "heldout_fold": 3}) == key
    assert _key(lock, {**params, "heldout_folds": 4}) != key


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def _write_run(repo: Path, lock: dict, params: dict, provenance: dict | None) -> None:
    (repo / "dvc.lock").write_text(yaml.safe_dump(lock))
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    live = repo / "results" / "train"
    live.mkdir(parents=True, exist_ok=True)
    if provenance is None:
        (live / "provenance.json").unlink(missing_ok=True)
    else:
        (live / "provenance.json").write_text(json.dumps(provenance))


def _run(name: str, seed: int, heldout: float, rev: str | None = None, key: str | None = None) -> Run:
    arm = tuple((k, (0, 1) if k == "delta_layers" else None if k == "max_training_tasks" else 1.0)
                for k in arms.ARM_KEYS)
    return Run(arm=arm, seed=seed, metrics={"heldout_accuracy": heldout, "seen_accuracy": 0.5}, counts={},
               train_tasks=None, diagnostics={"heldout_chance_mean": 0.1}, baseline="main", name=name, rev=rev,
               key=key)


def test_keys_read_from_experiment_commits_match_the_workspace(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "config", "user.email", "t@example.com")
    _git(tmp_path, "config", "user.name", "t")
    _write_run(tmp_path, LOCK, PARAMS, None)
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "code older than the provenance file")
    old = _git(tmp_path, "rev-parse", "HEAD")
    assert key_of_commit(str(tmp_path), old) is None
    _write_run(tmp_path, LOCK, {**PARAMS, "seed": 2}, PROVENANCE)
    per_task = {"t1": {"heldout": True, "chance": 0.1, "generated": {"accuracy": 0.5, "delta_cosine_eval": 0.2},
                       "base": {"accuracy": 0.1}, "nearest_tasks": ["t2"]}}
    (tmp_path / "results" / "evaluate").mkdir(parents=True)
    (tmp_path / "results" / "evaluate" / "per_task.json").write_text(json.dumps(per_task))
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "a run")
    rev = _git(tmp_path, "rev-parse", "--short", "HEAD")
    key, provenance = key_of_commit(str(tmp_path), rev)
    assert key == workspace_key(str(tmp_path)) == _key() and provenance["machine"] == "m1"
    done, unkeyed = keyed([_run("a", 2, 0.3, rev=rev), _run("b", 0, 0.3, rev=old), _run("c", 0, 0.3)], str(tmp_path))
    assert [(r.name, r.key, r.machine, r.baseline) for r in done] == [("a", key, "m1", old[:7])]
    assert done[0].per_task == {"t1": {"heldout": True, "generated": 0.5, "base": 0.1}}  # each adapter's accuracy
    with pytest.raises(LlgbmError, match="per_task.json task 'x' lacks 'heldout'"):
        per_task_accuracies({"x": {"generated": {"accuracy": 0.5}}}, "r")
    # an evaluation of code older than issue 33 names the mean of the teachers' factors mean_teacher
    assert per_task_accuracies({"x": {"heldout": False, "mean_teacher": {"accuracy": 0.25}}}, "r") == {
        "x": {"heldout": False, "factor_mean_teacher": 0.25}}
    assert [r.name for r in unkeyed] == ["b", "c"]
    (tmp_path / "results" / "train" / "provenance.json").unlink()
    with pytest.raises(LlgbmError, match="provenance.json: not found; run `dvc repro` first"):
        workspace_key(str(tmp_path))


def test_archive_round_trip_and_merge_keeps_what_is_recorded(tmp_path: Path) -> None:
    path = tmp_path / "study" / "runs.json"
    assert load_archive(path) == []
    archived = [_run("a", 0, 0.3, key="k"), _run("b", 1, 0.4, key="k")]
    save_archive(path, archived)
    assert load_archive(path) == archived  # tuples (delta_layers) and None come back as they were
    again = replace(archived[0], name="a-rerun")
    differs = replace(archived[1], name="b-rerun", metrics={"heldout_accuracy": 0.9, "seen_accuracy": 0.5})
    other_key = replace(archived[1], key="k2")
    merged, disagreements = merge_runs(load_archive(path), [again, differs, other_key, _run("c", 2, 0.1, key="k")])
    assert [r.name for r in merged] == ["a", "b", "b", "c"] and [r.key for r in merged][2] == "k2"
    assert disagreements == [(archived[1], differs)]


def test_failures_are_kept_beside_finished_runs_and_old_entries_still_load(tmp_path: Path) -> None:
    path = tmp_path / "runs.json"
    finished = _run("a", 0, 0.3, key="k")
    failed = replace(finished, name="a-failed", metrics={"heldout_accuracy": None}, failure="loss is nan at step 9")
    entry = run_to_json(finished)
    del entry["failure"]  # recorded before runs had a failure field
    path.write_text(json.dumps({"format": 1, "runs": [entry]}))
    assert load_archive(path) == [finished]
    # a failure of a recorded (key, arm, seed) is kept beside it, once; only an unrecorded one needs its reason
    assert new_failures([finished], [failed, finished]) == [failed]
    merged, disagreements = merge_runs([finished], [failed])
    assert merged == [finished, failed] and disagreements == []
    assert new_failures(merged, [replace(failed, name="again")]) == []
    merged, disagreements = merge_runs(merged, [replace(failed, name="again", failure="other")])
    assert merged == [finished, failed] and disagreements == []
    save_archive(path, merged)
    assert load_archive(path) == merged


def test_runs_archived_before_a_knob_or_the_fold_existed_still_load(tmp_path: Path) -> None:
    """The first study's runs predate train.behaviour_adapters (once train.delta_batch_size), the generator
    knobs and folds: they load, the knobs they lacked None and the fold NO_FOLD (their key keeps them apart
    from newer runs)."""
    from llgbm.study.experiments import NO_FOLD

    entry = run_to_json(_run("a", 0, 0.3, key="old"))
    later = ("train.behaviour_adapters", "generator.kind", "generator.condition", "generator.max_scale_factor", *LEVERS)
    for knob in later:
        del entry["arm"][knob]
    del entry["fold"]
    (tmp_path / "runs.json").write_text(json.dumps({"format": 1, "runs": [entry]}))
    [run] = load_archive(tmp_path / "runs.json")
    assert all(dict(run.arm)[knob] is None for knob in later) and run.replicate == (NO_FOLD, 0)
    assert [k for k, _ in run.arm] == list(arms.ARM_KEYS) and run.key == "old"
    archived = load_archive(DEFAULT_ARCHIVE_IN_REPO)  # the repository's own archive loads
    # the second edition's runs, recorded before the generator's hyperparameters were knobs: None, their key kept
    second = [r for r in archived if r.key == "4064f620d22d4f90"]
    assert second and all(dict(r.arm)[knob] is None for r in second for knob in LEVERS)


def test_runs_archived_under_old_names_load_under_the_new_ones(tmp_path: Path) -> None:
    """Issue 33 renamed a knob (train.delta_batch_size: train.behaviour_adapters), the diagnostics' mean of
    the teachers' updates (mean_teacher_...: update_mean_teacher_...) and the evaluation's mean of their
    factors (per-task mean_teacher: factor_mean_teacher); runs archived before read as if recorded now, and
    the file keeps what it holds."""
    run = replace(_run("a", 0, 0.3, key="k"), per_task={"t": {"heldout": True, "generated": 0.5, "factor_mean_teacher": 0.2}},
                  diagnostics={"heldout_chance_mean": 0.1, "update_mean_teacher_heldout_accuracy_mean": 0.15})
    entry = run_to_json(run)
    entry["arm"] = {("train.delta_batch_size" if k == "train.behaviour_adapters" else k): v for k, v in entry["arm"].items()}
    entry["diagnostics"] = {"heldout_chance_mean": 0.1, "mean_teacher_heldout_accuracy_mean": 0.15}
    entry["per_task"] = {"t": {"heldout": True, "generated": 0.5, "mean_teacher": 0.2}}
    text = json.dumps({"format": 1, "runs": [entry]})
    (tmp_path / "runs.json").write_text(text)
    assert load_archive(tmp_path / "runs.json") == [run]
    assert (tmp_path / "runs.json").read_text() == text
    # where a run holds both names, the new one's value
    both = {**entry, "diagnostics": {**entry["diagnostics"], "update_mean_teacher_heldout_accuracy_mean": 0.9}}
    (tmp_path / "runs.json").write_text(json.dumps({"format": 1, "runs": [both]}))
    assert load_archive(tmp_path / "runs.json")[0].diagnostics["update_mean_teacher_heldout_accuracy_mean"] == 0.9
    # the repository's own archive, recorded under the old names: none is left, and the SFT arms' count survives
    archived = load_archive(DEFAULT_ARCHIVE_IN_REPO)
    assert len(archived) >= 240  # the 240 recorded under the old names, and those recorded since
    old_names = {"train.delta_batch_size", "mean_teacher_heldout_accuracy_mean", "mean_teacher"}
    for r in archived:
        assert not old_names & (set(dict(r.arm)) | set(r.diagnostics) | {m for e in (r.per_task or {}).values() for m in e})
    sft = [r for r in archived if dict(r.arm)["behaviour_loss"] == "sft"]
    assert sft and {dict(r.arm)["train.behaviour_adapters"] for r in sft} == {8}
    assert any("update_mean_teacher_heldout_accuracy_mean" in r.diagnostics for r in archived)
    assert any("factor_mean_teacher" in e for r in archived for e in (r.per_task or {}).values())


def test_an_experiment_of_older_code_keeps_its_key_under_the_renamed_knob() -> None:
    """The batch knob is a run's own param under its old name too: an experiment of code older than the
    rename is keyed as its archived runs were, whatever its value."""
    old = {**PARAMS, "train": {**PARAMS["train"], "delta_batch_size": 2}}
    assert _key(params=_changed(old, ["train", "delta_batch_size"], 8)) == _key(params=old)
    new = {**PARAMS, "train": {**PARAMS["train"], "behaviour_adapters": 2}}
    assert _key(params=_changed(new, ["train", "behaviour_adapters"], 8)) == _key(params=new)


def test_a_metric_the_report_gained_is_added_from_the_same_experiment_only() -> None:
    archived = _run("a", 0, 0.3, rev="r1", key="k")
    read_again = replace(archived, metrics={**archived.metrics, "weight_norm_ratio": 2.5})
    merged, disagreements = merge_runs([archived], [read_again])
    assert merged == [read_again] and disagreements == []
    # another experiment of the same key, arm and seed: recorded as it was; a recorded value never changes
    merged, disagreements = merge_runs([archived], [replace(read_again, name="b", rev="r2")])
    assert merged == [archived] and disagreements == []
    changed = replace(read_again, metrics={**read_again.metrics, "heldout_accuracy": 0.9})
    merged, disagreements = merge_runs([archived], [changed])
    assert merged == [archived] and disagreements == [(archived, changed)]


def test_an_archived_experiment_read_again_under_another_key_stays_as_recorded() -> None:
    """An experiment still in DVC that the archive holds, keyed again by code whose ARM_KEYS grew (issue 34's
    validation runs: the knobs that joined are outside today's key, and its arm now has their values): the
    archived run is used, under the key and arm it was recorded with, and the experiment is not added twice;
    a metric the report gained is still added to it, and a failed one's queue log is not read again."""
    recorded = _run("a", 0, 0.3, rev="r1", key="old")
    rekeyed = replace(recorded, key="new", arm=tuple((k, 0.1 if k == "train.weight_decay" else v) for k, v in recorded.arm),
                      metrics={**recorded.metrics, "validation_accuracy": 0.4})
    other = replace(rekeyed, name="b", rev="r2")  # another experiment of the new key and arm: added
    merged, disagreements = merge_runs([recorded], [rekeyed, other])
    assert merged == [replace(recorded, metrics=rekeyed.metrics), other] and disagreements == []
    assert [(r.key, dict(r.arm)["train.weight_decay"]) for r in merged] == [("old", 1.0), ("new", 0.1)]
    failed = replace(recorded, name="f", rev="r3", failure="nan")
    assert new_failures([recorded, failed], [replace(failed, key="new", arm=rekeyed.arm, failure="failed")]) == []
    merged, _ = merge_runs([recorded, failed], [replace(failed, key="new", arm=rekeyed.arm, failure="failed")])
    assert merged == [recorded, failed]


def test_a_failed_run_is_keyed_only_where_its_code_is_what_its_lock_says(tmp_path: Path) -> None:
    """A failed experiment's commit is the workspace as queued, with the previous run's dvc.lock."""
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "config", "user.email", "t@example.com")
    _git(tmp_path, "config", "user.name", "t")
    lock = copy.deepcopy(LOCK)
    for stage in lock["stages"].values():
        for dep in stage["deps"]:
            if dep["path"].endswith(".py"):
                file = tmp_path / dep["path"]
                file.parent.mkdir(parents=True, exist_ok=True)
                file.write_text(f"# {dep['path']}\n")
                dep["md5"] = hashlib.md5(file.read_bytes()).hexdigest()
    _write_run(tmp_path, lock, PARAMS, PROVENANCE)
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "queued as run")
    same = _git(tmp_path, "rev-parse", "HEAD")
    (tmp_path / "llgbm" / "train.py").write_text("# edited before queueing, not reproduced\n")
    _git(tmp_path, "commit", "-qam", "queued with edited code")
    edited = _git(tmp_path, "rev-parse", "HEAD")
    failed = replace(_run("f", 1, 0.0), failure="failed")
    done, unkeyed = keyed([replace(failed, rev=same), replace(failed, name="g", rev=edited),
                           _run("finished", 2, 0.3, rev=edited)], str(tmp_path))
    assert [r.name for r in done] == ["f", "finished"] and [r.name for r in unkeyed] == ["g"]


def test_a_bad_archive_is_a_one_line_error_and_nothing_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What `llgbm compare --repo R --runs BAD --record --key k` does: an LlgbmError, which the command prints
    as its one line `error: <message>` with exit status 2 (tests/test_bad_input.py runs the command itself)."""
    def refuse(repo: str, revs: object) -> list:
        raise AssertionError("read experiments before the archive")
    monkeypatch.setattr(experiments, "exp_rows", refuse)
    bad = tmp_path / "runs.json"
    for text, message in (("{not json", "is not valid JSON"), ('{"format": 0, "runs": []}', "not a run archive"),
                          ('{"format": 1, "runs": [{"arm": {}}]}', "a run lacks")):
        bad.write_text(text)
        said: list[str] = []
        with pytest.raises(LlgbmError) as error:
            compare(repo=str(tmp_path), revs=None, runs=str(bad), record=True, key="k", out=None, readme=None,
                    plot=None, echo=said.append)
        assert str(error.value).startswith(f"{bad}: ") and message in str(error.value) and "\n" not in str(error.value)
        assert bad.read_text() == text and said == []


def test_experiment_baselines_are_read_from_dvc_refs(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "config", "user.email", "t@example.com")
    _git(tmp_path, "config", "user.name", "t")
    (tmp_path / "f").write_text("x")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "base")
    head = _git(tmp_path, "rev-parse", "HEAD")
    assert experiments.experiment_baselines(str(tmp_path)) == []
    _git(tmp_path, "update-ref", f"refs/exps/{head[:2]}/{head[2:]}/some-exp", head)
    _git(tmp_path, "update-ref", "refs/exps/celery/stash", head)  # the queue, not a finished experiment
    assert experiments.experiment_baselines(str(tmp_path)) == [head]
    assert experiments.experiment_baselines(str(tmp_path / "missing")) == []


def test_validation_figures_are_archived_and_older_runs_load_without_them(tmp_path: Path) -> None:
    """Issue 34: a run's validation accuracy and below-chance counts sit beside its other metrics and counts;
    the runs archived before them load with None, and saving them writes back what they held (no new field,
    no key changed)."""
    from llgbm.study.select import validation_accuracy

    text = DEFAULT_ARCHIVE_IN_REPO.read_text()
    entries = json.loads(text)["runs"]
    archived = load_archive(DEFAULT_ARCHIVE_IN_REPO)
    for entry, run in zip(entries, archived):
        if "validation_accuracy" not in entry["metrics"]:  # recorded before issue 34
            assert validation_accuracy(run) is None and run.counts.get("heldout_below_chance") is None
        again = run_to_json(run)
        assert (again["metrics"], again["counts"], again["key"]) == (entry["metrics"], entry["counts"], entry["key"])
    assert DEFAULT_ARCHIVE_IN_REPO.read_text() == text
    # the same experiment read again by today's code: a figure it does not have (None) is not added; one it has is
    old = _run("a", 0, 0.3, rev="r1", key="k")
    none = replace(old, metrics={**old.metrics, "validation_accuracy": None}, counts={"heldout_below_chance": None})
    assert merge_runs([old], [none]) == ([old], [])
    new = replace(old, metrics={**old.metrics, "validation_accuracy": 0.7}, counts={"heldout_below_chance": 2})
    merged, disagreements = merge_runs([old], [new])
    assert merged == [new] and disagreements == [] and validation_accuracy(merged[0]) == 0.7
    save_archive(tmp_path / "runs.json", merged)
    assert load_archive(tmp_path / "runs.json") == merged


def test_per_task_results_keep_their_group() -> None:
    """An evaluation with validation tasks names each task's group; the archive keeps it (the old "heldout"
    stays), and a group that contradicts "heldout" is an error."""
    rows = {"a_mirror": {"heldout": True, "group": "heldout", "generated": {"accuracy": 0.5}},
            "b_mirror": {"heldout": False, "group": "validation", "generated": {"accuracy": 0.25}},
            "c_mirror": {"heldout": False, "generated": {"accuracy": 1.0}}}
    assert per_task_accuracies(rows, "r") == {"a_mirror": {"heldout": True, "group": "heldout", "generated": 0.5},
                                              "b_mirror": {"heldout": False, "group": "validation", "generated": 0.25},
                                              "c_mirror": {"heldout": False, "generated": 1.0}}
    for group in ("heldout", "test"):
        with pytest.raises(LlgbmError, match=f"task 'x': group '{group}' is not one of heldout, validation, seen"):
            per_task_accuracies({"x": {"heldout": False, "group": group}}, "r")
