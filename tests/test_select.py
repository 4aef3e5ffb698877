"""`llgbm select`: arms ranked on validation tasks only; no held-out result is read (issue 34)."""
from __future__ import annotations

import math
import random
import statistics
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import pytest

import llgbm.study.experiments as experiments
from llgbm.infra.errors import LlgbmError
from llgbm.study.arms import ARM_KEYS, OBJECTIVES
from llgbm.study.experiments import Run
from llgbm.study.run_archive import DEFAULT_ARCHIVE, save_archive
from llgbm.study.select import rank_arms, select, selection_report, validation_accuracy, validation_figures

KNOBS = {"lambda_delta": 1.0, "delta_loss_type": "mse", "probe_count": 5, "lambda_schedule": "linear",
         "delta_reduce": "mean", "delta_layers": "last", "loss_balance": "grad_norm", "behaviour_loss": "delta",
         "max_training_tasks": None, "train.lambda_weights": 1.0, "train.behaviour_adapters": 2,
         "generator.kind": "mlp", "generator.condition": "prompts", "generator.max_scale_factor": 4.0,
         "train.weight_decay": 0.01, "train.steps": 3000, "train.learning_rate": 0.002,
         "train.lambda_weights_decay_steps": 0, "sft.records": 8, "generator.hidden_dim": 512, "generator.depth": 2,
         "generator.prompts_per_sample": 8}
# Validation accuracy per arm (before seed noise) and held-out accuracy ranked the other way round: a selector
# that read held-out figures would choose another arm.
VALIDATION = {"weight-only": 0.30, "SFT": 0.55, "SFT-only": 0.62}
HELDOUT = {"weight-only": 0.70, "SFT": 0.40, "SFT-only": 0.20}
TASKS = {"heldout": ["largest_mirror", "median_plus_two"], "validation": ["smallest_minus_one", "median_mirror"],
         "seen": ["largest_plus_one", "smallest_plus_two"]}


def _arm(objective: str) -> tuple:
    knobs = {**KNOBS, **OBJECTIVES[objective]}
    return tuple((k, knobs[k]) for k in ARM_KEYS)


def _runs() -> list[Run]:
    """Three arms x 2 folds x 3 seeds with validation and held-out figures, per-task results of every group and
    the below-chance counts; one failed run and one arm evaluated without validation tasks."""
    runs = []
    for objective in VALIDATION:
        for fold in (0, 1):
            for seed in range(3):
                noise = 0.01 * seed - 0.005 * fold
                per_task = {task: {"heldout": group == "heldout", "group": group,
                                   "generated": (HELDOUT if group == "heldout" else VALIDATION)[objective] + noise}
                            for group, names in TASKS.items() for task in names}
                runs.append(Run(arm=_arm(objective), seed=seed, fold=fold,
                                metrics={"heldout_accuracy": HELDOUT[objective] + noise, "seen_accuracy": 0.9,
                                         "validation_accuracy": VALIDATION[objective] + noise},
                                counts={"heldout_tasks": 2, "heldout_below_chance": 1, "validation_tasks": 2,
                                        "validation_below_chance": 0},
                                train_tasks=40, diagnostics={}, baseline="main", name=f"{objective}-{fold}-{seed}",
                                key="k", per_task=per_task))
    failed = replace(runs[0], seed=7, metrics={"heldout_accuracy": None}, counts={}, per_task=None, failure="nan")
    # An arm of this key evaluated without validation tasks: its runs carry held-out figures only.
    blind = replace(runs[0], arm=_arm("SFT-only, prompt-blind"), name="blind",
                    metrics={"heldout_accuracy": 0.99, "seen_accuracy": 0.9})
    return runs + [failed, blind]


def _selection(runs: list[Run]) -> tuple[list, str]:
    figures, without = validation_figures(runs)
    ranked = rank_arms(figures)
    return ranked, selection_report(ranked, without)


def _scrambled(run: Run, rng: random.Random) -> Run:
    """`run` with every held-out figure replaced by noise or removed: held-out metrics, per-task rows of the
    held-out group (their accuracies, or the rows themselves) and held-out counts."""
    metrics = {name: (rng.random() if "heldout" in name else value) for name, value in run.metrics.items()}
    counts = {name: (rng.randrange(50) if "heldout" in name else value) for name, value in run.counts.items()}
    per_task = None
    if run.per_task is not None and rng.random() < 0.5:
        per_task = {task: ({**entry, **{m: rng.random() for m in entry if m not in ("heldout", "group")}}
                           if entry["group"] == "heldout" else entry) for task, entry in run.per_task.items()}
    elif run.per_task is not None:
        per_task = {task: entry for task, entry in run.per_task.items() if entry["group"] != "heldout"}
    return replace(run, metrics=metrics, counts=counts, per_task=per_task)


def test_selection_reads_no_held_out_result() -> None:
    """The ranking, the choice and the report are the same after every held-out field is scrambled or removed,
    although held-out accuracy ranks the arms the other way round."""
    runs = _runs()
    ranked, report = _selection(runs)
    assert [dict(r.arm)["behaviour_loss"] for r in ranked][0] == "sft" and ranked[0].arm == _arm("SFT-only")
    assert [r.arm for r in ranked] == [_arm("SFT-only"), _arm("SFT"), _arm("weight-only")]
    for trial in range(20):
        rng = random.Random(trial)
        again, again_report = _selection([_scrambled(run, rng) for run in runs])
        assert again == ranked and again_report == report
    no_heldout = [replace(r, metrics={k: v for k, v in r.metrics.items() if "heldout" not in k},
                          counts={k: v for k, v in r.counts.items() if "heldout" not in k}, per_task=None) for r in runs]
    assert _selection(no_heldout) == (ranked, report)


class _Tripwire(Mapping):
    """A run's metrics, counts or per-task results that let only the validation figure be read."""

    def __init__(self, values: Mapping[str, Any], allowed: tuple[str, ...] = ()) -> None:
        self._values, self._allowed = dict(values), allowed

    def __getitem__(self, name: str) -> Any:
        if name not in self._allowed:
            raise AssertionError(f"selection read {name!r}")
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("selection went through every field")

    def __len__(self) -> int:
        raise AssertionError("selection counted the fields")


def test_selection_touches_only_the_validation_figure() -> None:
    runs = _runs()
    guarded = [replace(run, metrics=_Tripwire(run.metrics, ("validation_accuracy",)), counts=_Tripwire(run.counts),
                       per_task=_Tripwire(run.per_task or {}), diagnostics=_Tripwire(run.diagnostics))  # type: ignore[arg-type]
               for run in runs]
    assert _selection(guarded) == _selection(runs)


def test_ranking_figures_and_report() -> None:
    runs = _runs()
    figures, without = validation_figures(runs)
    assert without == {_arm("weight-only"): 1, _arm("SFT"): 0, _arm("SFT-only"): 0, _arm("SFT-only, prompt-blind"): 1}
    ranked = rank_arms(figures)
    best = ranked[0]
    values = [0.62 + 0.01 * s - 0.005 * f for f in (0, 1) for s in range(3)]
    assert best.runs == 6 and best.mean == pytest.approx(statistics.fmean(values))
    assert best.standard_error == pytest.approx(statistics.stdev(values) / math.sqrt(6)) and best.difference is None
    mean, standard_error, common = ranked[1].difference
    assert (mean, common) == (pytest.approx(0.55 - 0.62), 6) and standard_error == pytest.approx(0.0, abs=1e-12)
    report = selection_report(ranked, without)
    cell = f"{best.mean:.3f} ± {best.standard_error:.3f}"
    assert cell == "0.628 ± 0.004"
    assert report.splitlines()[2] == f"| 1 | SFT-only | — | all | 6 | {cell} | chosen |"
    assert f"| 2 | SFT | — | all | 6 | {ranked[1].mean:.3f} ± {ranked[1].standard_error:.3f} | -0.070 ± 0.000 (6) |" in report
    assert "| 3 | weight-only | train.behaviour_adapters=2 | all | 6 (+1 without) |" in report
    assert f"Chosen: SFT-only, max training tasks all (validation accuracy {cell} over 6 runs)." in report
    assert "Not ranked (no run with validation figures): SFT-only, prompt-blind (1 run)." in report
    # a tie in validation accuracy: the study's order (arm_order) decides, not chance
    tied = rank_arms({_arm("SFT"): {(0, 0): 0.5}, _arm("weight-only"): {(0, 0): 0.5}})
    assert [r.arm for r in tied] == [_arm("weight-only"), _arm("SFT")] and tied[0].standard_error is None
    assert "(1 run, no SE)" in selection_report(tied, {})


def test_selection_refuses_without_validation_figures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs of a key evaluated without validation tasks (or archived before they existed, metrics lacking the
    figure): nothing is chosen, and the error says how to get validation figures."""
    runs = [replace(r, metrics={k: v for k, v in r.metrics.items() if k != "validation_accuracy"}) for r in _runs()]
    assert all(validation_accuracy(r) is None for r in runs)
    with pytest.raises(LlgbmError, match=r"no run has validation figures .*validation_tasks=10"):
        rank_arms(validation_figures(runs)[0])
    save_archive(tmp_path / DEFAULT_ARCHIVE, runs)
    monkeypatch.setattr(experiments, "exp_rows", lambda repo, revs: [])
    with pytest.raises(LlgbmError, match=r"^key k: 20 runs; no run has validation figures"):
        select(repo=str(tmp_path), revs=None, runs=None, key="k", folds=None, echo=lambda text: None)


def test_select_command_reads_the_archive_of_one_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = _runs()
    other_key = [replace(r, key="k2", metrics={**r.metrics, "validation_accuracy": 1.0}) for r in runs if "weight" in r.name]
    save_archive(tmp_path / DEFAULT_ARCHIVE, runs + other_key)
    monkeypatch.setattr(experiments, "exp_rows", lambda repo, revs: [])
    said: list[str] = []
    chosen = select(repo=str(tmp_path), revs=None, runs=None, key="k", folds=None, echo=said.append)
    assert chosen.arm == _arm("SFT-only") and "Chosen: SFT-only" in "".join(said)
    assert "Runs of key `k`: 18 with validation figures, of 20." in "".join(said)
    said.clear()
    select(repo=str(tmp_path), revs=None, runs=None, key="k", folds=[1], echo=said.append)
    assert "| 1 | SFT-only | — | all | 3 |" in "".join(said) and "(folds 1): 9 with validation figures, of 9." in "".join(said)


def _nested(knobs: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted knobs as params.yaml nests them."""
    params: dict[str, Any] = {}
    for knob, value in knobs.items():
        *sections, name = knob.split(".")
        node = params
        for section in sections:
            node = node.setdefault(section, {})
        node[name] = value
    return params


def test_runs_differing_only_in_weight_decay_share_a_key_and_are_ranked(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The generator's hyperparameters are arm knobs: two runs whose params differ only in train.weight_decay
    are runs of one key (their code, shared outputs and libraries the same), so `llgbm select --key` ranks them
    against each other, the arm labelled by its weight decay."""
    from llgbm.study.run_archive import run_key

    lock = {"stages": {"train": {"cmd": "python stages/train.py", "deps": [{"path": "llgbm/recipes/train.py", "md5": "c1"}],
                                 "params": {"params.yaml": {"seed": 0, "train": {"weight_decay": 0.01}}},
                                 "outs": [{"path": "models/generator", "md5": "g1"}]}}}
    provenance = {"libraries": {"torch": "2.13.0"}, "precision": "no", "device": "cpu", "processes": 1}
    knobs = {**KNOBS, **OBJECTIVES["SFT-only"]}
    shared = {"seed": 0, "heldout_folds": 5, "heldout_fold": 0, "validation_tasks": 10, "train.batch_size": 8}
    keys = {decay: run_key(lock, _nested({**knobs, **shared, "train.weight_decay": decay}), provenance, "run")
            for decay in (0.01, 0.1)}
    assert keys[0.01] == keys[0.1]
    # a param that is not a knob still makes another key
    assert run_key(lock, _nested({**knobs, **shared, "train.batch_size": 16}), provenance, "run") != keys[0.01]

    runs = [Run(arm=experiments.arm_of({**knobs, "train.weight_decay": decay}), seed=seed, fold=0,
                metrics={"heldout_accuracy": 0.3, "validation_accuracy": figure + 0.01 * seed}, counts={},
                train_tasks=40, diagnostics={}, baseline="main", name=f"wd{decay}-{seed}", rev=f"r{decay}{seed}",
                key=keys[decay]) for decay, figure in ((0.01, 0.25), (0.1, 0.38)) for seed in range(3)]
    save_archive(tmp_path / DEFAULT_ARCHIVE, runs)
    monkeypatch.setattr(experiments, "exp_rows", lambda repo, revs: [])
    said: list[str] = []
    chosen = select(repo=str(tmp_path), revs=None, runs=None, key=keys[0.01], folds=None, echo=said.append)
    report = "".join(said)
    assert dict(chosen.arm)["train.weight_decay"] == 0.1 and chosen.mean == pytest.approx(0.39)
    assert "| 1 | SFT-only | — | all | 3 | 0.390 ± 0.006 | chosen |" in report
    assert "| 2 | SFT-only | train.weight_decay=0.01 | all | 3 | 0.260 ± 0.006 | -0.130 ± 0.000 (3) |" in report
    assert f"Runs of key `{keys[0.01]}`: 6 with validation figures, of 6." in report


@pytest.mark.e2e
def test_the_select_command_refuses_an_archive_without_validation_figures(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "DVC_NO_ANALYTICS": "1"}
    for command in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"],
                    ["git", "commit", "-qm", "init"]):
        subprocess.run(command, cwd=tmp_path, env=env, check=True, capture_output=True)
    save_archive(tmp_path / DEFAULT_ARCHIVE, [replace(r, metrics={**r.metrics, "validation_accuracy": None}) for r in _runs()])
    result = subprocess.run([sys.executable, "-m", "llgbm.cli", "select", "--repo", str(tmp_path), "--key", "k",
                             "--runs", str(tmp_path / DEFAULT_ARCHIVE)], capture_output=True, text=True, env=env)
    assert result.returncode == 2 and result.stderr.startswith("error: key k:") and "no run has validation figures" in result.stderr
