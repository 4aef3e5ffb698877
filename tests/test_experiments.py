import math
import re
import statistics
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

import llgbm.study.experiments as experiments
import llgbm.study.grid as grid
import llgbm.study.run_archive as run_archive
from llgbm.infra.errors import LlgbmError
from llgbm.study.arms import arm_knobs, objective_of
from llgbm.study.blocks import README_BEGIN, README_END, replace_marked
from llgbm.study.compare import compare, compare_command
from llgbm.study.experiments import collect_runs, failed_replicates, failure_reasons, failure_text
from llgbm.study.grid import grid_arms, knob_defaults, queue_commands, queue_grid, study_arms
from llgbm.study.plot import heldout_vs_tasks, reference_points, training_task_count, write_plot
from llgbm.study.report import comparison_report
from llgbm.study.run_archive import DEFAULT_ARCHIVE, save_archive
from llgbm.study.stats import mean_ci

DEFAULTS = {"lambda_delta": 1.0, "delta_loss_type": "mse", "probe_count": 5, "lambda_schedule": "linear",
            "delta_reduce": "mean", "delta_layers": "last", "loss_balance": "grad_norm", "behaviour_loss": "delta",
            "max_training_tasks": None, "train.lambda_weights": 1.0, "train.behaviour_adapters": 2,
            "generator.kind": "mlp", "generator.condition": "prompts", "generator.max_scale_factor": 4.0,
            "train.weight_decay": 0.01, "train.steps": 3000, "train.learning_rate": 0.002,
            "train.lambda_weights_decay_steps": 0, "sft.records": 8, "generator.hidden_dim": 512, "generator.depth": 2,
            "generator.prompts_per_sample": 8}
# The generator's hyperparameters, arm knobs since issue 34's validation runs: experiments of older code lack them.
LEVERS = ("train.weight_decay", "train.steps", "train.learning_rate", "train.lambda_weights_decay_steps", "sft.records",
          "generator.hidden_dim", "generator.depth", "generator.prompts_per_sample")


# --- the grid ---------------------------------------------------------------------------------------

def test_ablation_grid_covers_the_spec_once_each() -> None:
    arms = study_arms(DEFAULTS, "ablations")
    assert arms == grid_arms(DEFAULTS)
    assert len(arms) == len({tuple(sorted(a.items())) for a in arms})
    assert {a["lambda_delta"] for a in arms} == {0.0, 0.1, 0.5, 1.0, 2.0}
    assert {a["delta_loss_type"] for a in arms} == {"mse", "cosine", "combined"}
    assert {a["probe_count"] for a in arms} == {3, 5, 10}
    assert {a["lambda_schedule"] for a in arms} == {"constant", "linear", "cosine"}
    for ld in (0.1, 1.0):
        for lt in ("mse", "cosine"):
            assert {**DEFAULTS, "lambda_delta": ld, "delta_loss_type": lt} in arms
    assert {a["delta_reduce"] for a in arms} == {"mean", "per_probe"}
    assert {a["delta_layers"] for a in arms} == {"last", "all"}
    assert {a["loss_balance"] for a in arms} == {"none", "grad_norm"}
    assert {a["behaviour_loss"] for a in arms} == {"delta", "kl"}
    assert len(arms) == 16
    command = queue_commands(arms[:1], [0, 1, 2])[0]
    assert command[:4] == ["dvc", "exp", "run", "--queue"] and command[-1] == "seed=0,1,2"


@pytest.fixture
def no_dvc(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a dry run called a subprocess")
    monkeypatch.setattr(grid.subprocess, "run", refuse)


def _queued(study: str) -> list[str]:
    lines = queue_grid([0, 1, 2, 3, 4], True, study_arms(DEFAULTS, study))
    for line in lines:
        assert line.startswith("dvc exp run --queue -S ") and line.endswith(" -S seed=0,1,2,3,4")
    return lines


def test_study_objectives_queue(no_dvc: None) -> None:
    lines = _queued("objectives")
    arms = study_arms(DEFAULTS, "objectives")
    assert [objective_of(a) for a in arms] == ["weight-only", "delta", "per-probe delta", "multi-layer delta", "KL",
                                               "delta-only", "KL-only", "SFT", "SFT-only", "SFT-only, prompt-blind"]
    assert "-S lambda_delta=0.0" in lines[0] and "-S delta_reduce=per_probe" in lines[2]
    assert "-S delta_layers=all" in lines[3] and "-S behaviour_loss=kl" in lines[4]
    for line in lines[5:7] + lines[8:]:  # behaviour term alone: lambda_weights 0 needs the plain sum
        assert "-S train.lambda_weights=0.0" in line and "-S loss_balance=none" in line
    assert all("-S behaviour_loss=sft" in line and "-S train.behaviour_adapters=8" in line for line in lines[7:])
    assert "-S generator.condition=constant" in lines[9] and "-S generator.condition=prompts" in lines[8]
    assert all("-S max_training_tasks=null" in line for line in lines)


def test_study_arms_do_not_depend_on_the_default_objective() -> None:
    # params.yaml's default objective changes by measurement (issue 34); the study's arms stay the same.
    sft_only = {**DEFAULTS, "behaviour_loss": "sft", "train.behaviour_adapters": 8, "train.lambda_weights": 0.0,
                "loss_balance": "none"}
    assert study_arms(sft_only, "all") == study_arms(DEFAULTS, "all")


def test_study_lambdas_and_task_counts_queue(no_dvc: None) -> None:
    lambdas = _queued("lambdas")
    assert [line.split("-S lambda_delta=")[1].split()[0] for line in lambdas] == ["0.1", "1.0", "5.0"]
    counts = _queued("task_counts")
    assert len(counts) == 9
    for count in ("12", "24", "null"):
        chosen = [line for line in counts if f"-S max_training_tasks={count} " in line]
        assert len(chosen) == 3
        assert {"-S lambda_delta=0.0" in line for line in chosen} == {True, False}
        assert sum("-S behaviour_loss=sft" in line for line in chosen) == 1
    every = study_arms(DEFAULTS, "all")  # objectives + 2 new lambdas + 3 objectives x 2 new counts
    assert len(every) == 10 + 2 + 6 and len({str(a) for a in every}) == len(every)
    assert "delta_layers=[0,1]" in queue_commands([{**DEFAULTS, "delta_layers": [0, 1]}], [0])[0]


def test_grid_arms_chooses_by_name_in_the_given_order(no_dvc: None) -> None:
    arms = study_arms(DEFAULTS, "all")
    chosen = grid.chosen_arms(arms, ["SFT", "weight-only", "SFT"], "all")
    assert [objective_of(a) for a in chosen] == ["SFT"] * 3 + ["weight-only"] * 3  # every task count of each
    assert [a["max_training_tasks"] for a in chosen] == [None, 12, 24, None, 12, 24]
    assert grid.chosen_arms(arms, None, "all") == arms
    with pytest.raises(LlgbmError, match=r"--arms: 'sft' not among the arms of --study objectives: 'weight-only', 'delta'"):
        grid.chosen_arms(study_arms(DEFAULTS, "objectives"), ["delta", "sft"], "objectives")
    said: list[str] = []  # `llgbm grid --study objectives --arms 'SFT-only, prompt-blind' delta --seeds 0 --folds 1 --dry-run`
    grid.grid(params="params.yaml", study="objectives", arm_names=["SFT-only, prompt-blind", "delta"], seeds=[0],
              folds=[1], missing=False, dry_run=True, echo=said.append)
    out = "".join(said).splitlines()
    assert len(out) == 2 and "-S generator.condition=constant" in out[0] and "-S behaviour_loss=delta" in out[1]
    assert all(line.endswith("-S heldout_fold=1 -S seed=0") for line in out)


def test_exp_rows_tries_again_while_the_queue_sets_an_experiment_up(monkeypatch: pytest.MonkeyPatch) -> None:
    from scmrepo.exceptions import SCMError

    calls = []

    def flaky(repo: str, revs: object) -> list[dict]:
        calls.append(revs)
        if len(calls) < experiments.EXP_SHOW_TRIES:
            raise SCMError("Empty git repo")
        return [{"Experiment": "x"}]

    monkeypatch.setattr(experiments, "EXP_SHOW_RETRY_SECONDS", 0.0)
    monkeypatch.setattr(experiments.dvc.api, "exp_show", flaky)
    assert experiments.exp_rows(".", ["abc"]) == [{"Experiment": "x"}] and len(calls) == experiments.EXP_SHOW_TRIES

    def broken(repo: str, revs: object) -> list[dict]:
        raise SCMError("Empty git repo")

    monkeypatch.setattr(experiments.dvc.api, "exp_show", broken)
    with pytest.raises(LlgbmError, match=r"dvc exp show failed 3 times \(Empty git repo\).*run it again"):
        experiments.exp_rows(".", ["abc"])


def test_missing_queues_only_what_no_run_has(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`llgbm grid --missing`: finished or failed runs of the workspace's key (archived or experiments) and
    queued or running experiments are not queued again; runs of another key do not count."""
    arms = study_arms(DEFAULTS, "objectives")
    weight_only, delta = arms[0], arms[1]
    rows = [{**_row("queued", 3, None, lambda_delta=0.0), "State": "Queued"},
            {**_row("running", 4, None, lambda_delta=0.0), "State": "Running"}]
    no_fold = experiments.NO_FOLD
    assert experiments.pending_runs(rows) == {(experiments.arm_of(weight_only), (no_fold, 3)),
                                              (experiments.arm_of(weight_only), (no_fold, 4))}
    have = experiments.pending_runs(rows) | {(experiments.arm_of(delta), (no_fold, 0))}
    assert grid.missing_replicates([weight_only, delta], grid.replicates_of([0, 3, 4], None), have) == [
        (weight_only, [(no_fold, 0)]), (delta, [(no_fold, 3), (no_fold, 4)])]
    assert queue_grid([3, 4], True, [weight_only], have) == []
    assert queue_grid([0, 3], True, [delta], have)[0].endswith(" -S seed=3")

    finished = [replace(r, key="k1") for r in collect_runs([_row("w0", 0, 0.1, lambda_delta=0.0)])]
    failed = replace(finished[0], seed=1, failure="nan")
    other_key = replace(finished[0], seed=2, key="k0")
    monkeypatch.chdir(tmp_path)
    save_archive(tmp_path / DEFAULT_ARCHIVE, finished + [failed, other_key])
    monkeypatch.setattr(experiments, "exp_rows", lambda repo, revs=None: rows)
    monkeypatch.setattr(run_archive, "workspace_key", lambda repo: "k1")
    # The repository's params with a fixed held-out set (runs without folds: NO_FOLD replicates), every knob
    # the study's arms leave at params' value at the one the runs above had (DEFAULTS).
    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    for knob, value in DEFAULTS.items():
        *sections, name = knob.split(".")
        node = raw
        for section in sections:
            node = node[section]
        node[name] = value
    params = tmp_path / "fixed-heldout.yaml"
    params.write_text(yaml.safe_dump({**raw, "heldout_folds": None, "heldout_tasks": ["smallest_plus_two"]}))
    said: list[str] = []  # `llgbm grid --params <params> --study objectives --seeds 0 1 2 3 4 --missing --dry-run`
    grid.grid(params=str(params), study="objectives", arm_names=None, seeds=[0, 1, 2, 3, 4], folds=None, missing=True,
              dry_run=True, echo=said.append)
    out = "".join(said).splitlines()
    assert out[0] == ("--missing: 1 finished and 1 failed runs of key k1, 2 queued or running, are not queued again")
    assert out[1].startswith("dvc exp run --queue -S lambda_delta=0.0 ") and out[1].endswith(" -S seed=2")
    assert len(out) == 1 + len(arms) and all(line.endswith(" -S seed=0,1,2,3,4") for line in out[2:])


def test_study_needs_every_knob_and_a_behaviour_weight() -> None:
    params = {k: v for k, v in DEFAULTS.items() if "." not in k} | {
        "train": {"lambda_weights": 1.0, "behaviour_adapters": 2, "weight_decay": 0.01, "steps": 3000,
                  "learning_rate": 0.002, "lambda_weights_decay_steps": 0, "batch_size": 8},
        "sft": {"records": 8},
        "generator": {"kind": "mlp", "condition": "prompts", "max_scale_factor": 4.0, "hidden_dim": 512, "depth": 2,
                      "prompts_per_sample": 8, "chunk_width": 64}}
    assert knob_defaults(params, "p.yaml") == DEFAULTS
    with pytest.raises(LlgbmError, match="p.yaml: no 'train.lambda_weights'"):
        knob_defaults({**params, "train": {}}, "p.yaml")
    with pytest.raises(LlgbmError, match="p.yaml: no 'sft.records'"):
        knob_defaults({k: v for k, v in params.items() if k != "sft"}, "p.yaml")
    # the repository's params.yaml spells out every knob (`dvc exp run -S` refuses a key the file lacks)
    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    assert set(knob_defaults(raw, "params.yaml")) == set(DEFAULTS)
    with pytest.raises(LlgbmError, match="p.yaml: no 'max_training_tasks'"):
        knob_defaults({k: v for k, v in params.items() if k != "max_training_tasks"}, "p.yaml")
    with pytest.raises(LlgbmError, match="p.yaml: 'lambda_delta' is 0"):
        study_arms({**DEFAULTS, "lambda_delta": 0.0}, "objectives", "p.yaml")


# --- the report -------------------------------------------------------------------------------------

def _shown(value: object) -> object:
    """A param as dvc.api.exp_show gives it: numbers as floats, null as "None", a list as its repr."""
    if value is None:
        return "None"
    if isinstance(value, list):
        return str(value)
    return float(value) if isinstance(value, (int, float)) else value


def _row(name: str, seed: int, heldout: float | None, seen: float = 0.9, tasks: tuple = (8.0, 42.0),
         **knobs: object) -> dict:
    params = {**DEFAULTS, **knobs}
    row = {"Experiment": name, "rev": f"{abs(hash(name)) % 10**7:07d}", "typ": "branch_commit", "State": "Success",
           "seed": float(seed),
           # a name two metrics files share gets its file's prefix; the diagnostics' one must not be read
           "results/diagnostics/metrics.json:heldout.tasks": 99.0,
           "heldout.accuracy.generated": "None" if heldout is None else heldout, "seen.accuracy.generated": seen,
           "heldout.gain_share.generated": 0.05, "heldout.defined.gain_share.generated": 6.0,
           "heldout.delta_cosine_eval.generated": 0.4, "heldout.delta_cosine_eval_centred.generated": 0.1,
           "results/evaluate/metrics.json:heldout.tasks": tasks[0], "seen.tasks": tasks[1],
           "update_mean_teacher_heldout_accuracy_mean": 0.11, "heldout_chance_mean": 0.1,
           "multitask_heldout_accuracy_mean": 0.12, "multitask_seen_accuracy_mean": 0.8}
    row.update({k: _shown(v) for k, v in params.items()})
    return row


def _study_rows() -> list[dict]:
    return [
        {**_row("ws", 0, 0.9), "Experiment": None, "typ": "baseline", "rev": "workspace"},
        {**_row("main", 0, 0.9), "Experiment": None, "typ": "baseline", "rev": "master"},
        _row("w0", 0, 0.10, lambda_delta=0.0), _row("w1", 1, 0.20, lambda_delta=0.0),
        _row("w2", 2, 0.30, lambda_delta=0.0),
        # the delta arm's rows in another order than the reference's: pairing is by seed
        _row("d2", 2, 0.37, seen=0.7), _row("d0", 0, 0.15, seen=0.8), _row("d1", 1, 0.24, seen=0.9),
        _row("d0-again", 0, 0.99),  # the same arm and seed twice: the report counts the first
        _row("kl0", 0, 0.50, behaviour_loss="kl"),
        _row("only0", 0, 0.0, **{"train.lambda_weights": 0.0, "loss_balance": "none"}),  # 0.0 is a value
        _row("t8", 0, 0.20, tasks=("None", 8.0), max_training_tasks=8),
        _row("q", 0, None, lambda_delta=2.0),  # queued: no metrics yet
        _row("layers", 1, 0.7, delta_layers=[0, 1]),
        _row("p7", 7, 0.3, probe_count=10),  # no seed in common with weight-only
    ]


def _line(report: str, start: str) -> str:
    return next(line for line in report.splitlines() if line.startswith(start))


def test_report_pairs_arms_and_shows_seeds_and_tasks() -> None:
    report = comparison_report(collect_runs(_study_rows()))
    assert "lambda_delta=2.0" not in report
    weight_only = _line(report, "| weight-only | — | all |")
    delta = _line(report, "| delta | — | all |")
    assert weight_only.endswith("| reference | reference | reference | — | — |")
    assert "| 3 | 8 / 42 | 0.200 ± 0.248 |" in weight_only
    # held-out: per-seed differences 0.05, 0.04, 0.07 (the hand example); seen: -0.1, 0, -0.2
    assert "| 3 | 8 / 42 | 0.253 ± 0.275 | 0.800 ± 0.248 | 0.050 ± 0.000 | 6 | 0.400 ± 0.000 | 0.100 ± 0.000 |" in delta
    # detectable: (t(0.975, 2) + t(0.8, 2)) x sd / sqrt(3), both quantiles in closed form at df = 2
    sd = statistics.stdev([0.05, 0.04, 0.07])
    detectable = (0.95 / math.sqrt(2 * 0.975 * 0.025) + 0.6 / math.sqrt(2 * 0.8 * 0.2)) * sd / math.sqrt(3)
    assert delta.endswith(f"| +0.053 ± 0.038 (3 seeds) | -0.100 ± 0.248 (3 seeds) | {detectable:.3f} | — | — |")
    kl = _line(report, "| KL | — | all |")
    assert "| 1 | 8 / 42 | 0.500 (1 seed, no CI) |" in kl and kl.endswith("| +0.400 (1 seed, no CI) | +0.000 (1 seed, no CI) | — | — | — |")
    only = _line(report, "| delta-only | — | all |")  # the knobs its name says are not repeated
    assert "| 1 | 8 / 42 | 0.000 (1 seed, no CI) |" in only
    eight = _line(report, "| delta | — | 8 |")
    assert "| 1 | ? / 8 |" in eight and eight.endswith("| no weight-only run | no weight-only run | no weight-only run | — | — |")
    layers = _line(report, "| delta at layers 0, 1 | — | all | 1 |")  # seed 1, paired with weight-only's seed 1
    assert layers.endswith("| +0.500 (1 seed, no CI) | +0.000 (1 seed, no CI) | — | — | — |")
    assert _line(report, "| delta | probe_count=10 | all | 1 |").endswith("| no common seed | no common seed | — | — | — |")
    assert _line(report, "| baseline: mean of training teachers | testbed diagnostics | any | — | — | 0.110 | — |")
    assert _line(report, "| baseline: multi-task LoRA | testbed diagnostics | any | — | — | 0.120 | 0.800 |")
    assert _line(report, "| baseline: chance |")
    assert "task arithmetic" not in report  # absent from the diagnostics: no row, no guess


def test_report_diagnostics_per_task_count_where_they_differ() -> None:
    rows = [_row("w0", 0, 0.1, lambda_delta=0.0),
            {**_row("e0", 0, 0.2, max_training_tasks=8), "update_mean_teacher_heldout_accuracy_mean": 0.3}]
    report = comparison_report(collect_runs(rows))
    assert _line(report, "| baseline: mean of training teachers | testbed diagnostics | 8 | — | — | 0.300 |")
    assert _line(report, "| baseline: mean of training teachers | testbed diagnostics | all | — | — | 0.110 |")
    bare = [{k: v for k, v in _row("w0", 0, 0.1).items() if "." in k or not k.endswith("_mean")}]
    fallback = comparison_report(collect_runs(bare), {"nearest_teacher_heldout_accuracy_mean": 0.0125})
    assert _line(fallback, "| baseline: nearest training teacher | testbed diagnostics | workspace | — | — | 0.013 |")


def test_params_read_back_from_exp_show() -> None:
    runs = collect_runs(_study_rows())
    layers = next(r for r in runs if dict(r.arm)["delta_layers"] != "last")
    assert dict(layers.arm)["delta_layers"] == (0, 1) and layers.seed == 1
    eight = next(r for r in runs if dict(r.arm)["max_training_tasks"] is not None)
    assert dict(eight.arm)["max_training_tasks"] == 8 and eight.counts["heldout_tasks"] is None
    assert {r.baseline for r in runs} == {"master"}
    # three seeds of the delta arm (one read twice: every experiment is kept until keyed), one of its probe_count=10 variant
    assert sum(objective_of(dict(r.arm)) == "delta" and dict(r.arm)["max_training_tasks"] is None for r in runs) == 5
    # a param name a metrics file shares: exp_show prefixes both, and the param is read from params.yaml
    row = {k: v for k, v in _row("x", 0, 0.1).items() if k != "seed"}
    (run,) = collect_runs([{**row, "results/train/metrics.json:seed": 9.0, "params.yaml:seed": 4.0}])
    assert run.seed == 4


def test_experiments_of_code_older_than_a_rename_read_under_the_new_names() -> None:
    """Issue 33 renamed the batch knob (train.delta_batch_size) and the diagnostics' mean of the teachers'
    updates (mean_teacher_heldout_accuracy_mean): an experiment of older code, whose row has the old names,
    is read as one of today's, finished or pending."""
    def older(row: dict) -> dict:
        renames = {"train.behaviour_adapters": "train.delta_batch_size",
                   "update_mean_teacher_heldout_accuracy_mean": "mean_teacher_heldout_accuracy_mean"}
        return {renames.get(k, k): v for k, v in row.items()}

    sft = {"behaviour_loss": "sft", "train.behaviour_adapters": 8}
    new, old = collect_runs([_row("n", 0, 0.3, **sft)]), collect_runs([older(_row("o", 0, 0.3, **sft))])
    assert old[0].arm == new[0].arm and dict(old[0].arm)["train.behaviour_adapters"] == 8
    assert old[0].diagnostics == new[0].diagnostics and old[0].diagnostics["update_mean_teacher_heldout_accuracy_mean"] == 0.11
    queued = {**older(_row("q", 1, None, **sft)), "State": "Queued"}
    assert experiments.pending_runs([queued]) == {(new[0].arm, (experiments.NO_FOLD, 1))}
    # exp_show puts every row's columns in every row: the new name's None in an old row is not its value
    assert collect_runs([{**older(_row("o", 0, 0.3, **sft)), "train.behaviour_adapters": None}])[0].arm == new[0].arm
    report = comparison_report(old)
    assert _line(report, "| baseline: mean of training teachers | testbed diagnostics | any | — | — | 0.110 |")
    # the workspace's diagnostics of older code, where no run carries any
    bare = [{k: v for k, v in _row("w0", 0, 0.1).items() if "." in k or not k.endswith("_mean")}]
    fallback = comparison_report(collect_runs(bare), {"mean_teacher_heldout_accuracy_mean": 0.0125})
    assert _line(fallback, "| baseline: mean of training teachers | testbed diagnostics | workspace | — | — | 0.013 |")


def test_experiments_of_code_older_than_a_knob_read_it_as_none() -> None:
    """The generator's hyperparameters joined ARM_KEYS after issue 34's runs: an exp_show row of code older than a
    knob lacks it (or, beside newer rows, shows it as "None") and reads as None, finished or pending; a row that
    has them reads each as params.yaml writes it (exp_show's floats: integers again)."""
    levers = {"train.steps": 6000, "train.weight_decay": 0.1, "sft.records": 16, "generator.hidden_dim": 1024}
    [new] = collect_runs([_row("n", 0, 0.3, **levers)])
    values = dict(new.arm)
    assert {k: values[k] for k in LEVERS} == {**{k: DEFAULTS[k] for k in LEVERS}, **levers}
    assert all(type(values[k]) is type(DEFAULTS[k]) for k in LEVERS)  # 6000, not 6000.0
    older = {k: v for k, v in _row("o", 0, 0.3, **levers).items() if k not in LEVERS}
    [old] = collect_runs([older])
    assert all(dict(old.arm)[k] is None for k in LEVERS)
    assert [kv for kv in old.arm if kv[0] not in LEVERS] == [kv for kv in new.arm if kv[0] not in LEVERS]
    assert collect_runs([{**older, **{k: "None" for k in LEVERS}}])[0].arm == old.arm
    queued = {**older, "Experiment": "q", "State": "Queued"}
    assert experiments.pending_runs([queued]) == {(old.arm, (experiments.NO_FOLD, 0))}
    # the report names the knob an arm differs in, and one a run did not record as such
    assert arm_knobs([new.arm, old.arm, old.arm])[new.arm] == (
        "train.weight_decay=0.1, train.steps=6000, train.learning_rate=0.002, train.lambda_weights_decay_steps=0, "
        "sft.records=16, generator.hidden_dim=1024, generator.depth=2, generator.prompts_per_sample=8")
    assert arm_knobs([old.arm, new.arm, new.arm])[old.arm] == ", ".join(f"{k} not recorded" for k in LEVERS)


# --- README and plot --------------------------------------------------------------------------------

def test_readme_markers_replaced_and_required() -> None:
    text = f"# title\n\nbefore\n{README_BEGIN}\nold table\n{README_END}\nafter\n"
    new = replace_marked(text, "new table", "README.md")
    assert new == f"# title\n\nbefore\n{README_BEGIN}\nnew table\n{README_END}\nafter\n"
    assert replace_marked(new, "new table", "README.md") == new
    for broken in ("no markers\n", f"{README_BEGIN}\nonly the start\n", f"{README_END}\n{README_BEGIN}\n",
                   f"{README_BEGIN}\n{README_END}\n{README_BEGIN}\n{README_END}\n"):
        with pytest.raises(LlgbmError, match="^docs/README.md: needs one"):
            replace_marked(broken, "x", "docs/README.md")


def _compare(**options: object) -> str:
    """What `llgbm compare` runs, its options at their defaults but `options`; what it says, as one text."""
    said: list[str] = []
    compare(**{"repo": ".", "revs": None, "runs": None, "record": False, "key": None, "out": None, "readme": None,
               "plot": None, "block": "compare", "folds": None, "by_factor": False, **options}, echo=said.append)  # type: ignore[arg-type]
    return "".join(said)


def test_runs_of_one_arm_and_seed_on_two_testbeds_both_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two experiments of one arm and seed are kept until keyed: here they are two testbeds (base.seed), and
    each key's report has its own run, where collect_runs once kept only the first it read."""
    rows = [_row("t1", 0, 0.10, lambda_delta=0.0), _row("t2", 0, 0.40, lambda_delta=0.0)]
    assert [run.name for run in collect_runs(rows)] == ["t1", "t2"]
    key_of = {rows[0]["rev"]: "first", rows[1]["rev"]: "second"}
    monkeypatch.setattr(experiments, "exp_rows", lambda repo, revs: rows)
    monkeypatch.setattr(run_archive, "key_of_commit", lambda repo, rev: (key_of[rev], {"machine": "m"}))
    monkeypatch.setattr(run_archive, "resolve_commit", lambda repo, rev: None)
    monkeypatch.setattr(run_archive, "_per_task_of_commit", lambda repo, rev: None)
    for key, accuracy in (("first", "0.100"), ("second", "0.400")):
        _compare(repo=str(tmp_path), key=key, out=str(tmp_path / f"{key}.md"))
        assert _line((tmp_path / f"{key}.md").read_text(), "| weight-only | — | all | 1 |").split(" | ")[5].startswith(accuracy)


def test_compare_writes_readme_and_plot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """From the run archive alone (a fresh clone has no DVC experiments), runs of the named key only."""
    readme = tmp_path / "README.md"
    readme.write_text(f"# results\n{README_BEGIN}\nstale\n{README_END}\nkept\n")
    runs = [replace(run, key="k1", machine="m") for run in collect_runs(_study_rows())]
    other = replace(runs[0], key="k0", arm=tuple((k, 0.5 if k == "lambda_delta" else v) for k, v in runs[0].arm))
    save_archive(tmp_path / DEFAULT_ARCHIVE, runs + [other])
    monkeypatch.setattr(experiments, "exp_rows", lambda repo, revs: [])
    said = _compare(repo=str(tmp_path), key="k1", readme=str(readme))
    text = readme.read_text()
    assert "stale" not in text and text.startswith(f"# results\n{README_BEGIN}\n") and text.endswith(f"{README_END}\nkept\n")
    assert f"`llgbm compare --repo {tmp_path} --key k1 --readme {readme}`" in text
    assert "- seeds: 0, 1, 2, 7\n" in text and "- experiments ran on commit master\n" in text  # not a git repo
    assert "CPUs, torch " in text and "| delta | — | all | 3 |" in text
    assert "lambda_delta=0.5" not in text and "Left out, made by other code, params or libraries: 1 of key `k0`." in text
    assert f"Runs of key `k1`: {len(runs)} of the {len(runs) + 1} (finished or failed) read from the archive " \
           f"`{(tmp_path / DEFAULT_ARCHIVE).as_posix()}`" in text and "ran on m." in text
    assert "![held-out accuracy against the number of training tasks, per objective]" \
           "(results/compare/heldout_vs_tasks.png)" in text
    png = tmp_path / "results/compare/heldout_vs_tasks.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "wrote the results between the markers" in said


def test_compare_writes_its_own_block_beside_another_study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--block: a second study's table goes between its own markers; the first study's block is kept."""
    readme = tmp_path / "results.md"
    readme.write_text(f"{README_BEGIN}\nfirst study\n{README_END}\n<!-- second:begin -->\nstale\n<!-- second:end -->\n")
    save_archive(tmp_path / DEFAULT_ARCHIVE, [replace(run, key="k1") for run in collect_runs(_study_rows())])
    monkeypatch.setattr(experiments, "exp_rows", lambda repo, revs: [])
    _compare(repo=str(tmp_path), key="k1", readme=str(readme), block="second")
    text = readme.read_text()
    assert "first study" in text and "stale" not in text and "| delta | — | all | 3 |" in text
    assert f"--readme {readme} --block second`" in text
    readme.write_text("no markers\n")
    with pytest.raises(LlgbmError, match="needs one '<!-- second:begin -->'"):
        _compare(repo=str(tmp_path), key="k1", readme=str(readme), block="second")


def test_compare_folds_keeps_only_those_folds_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--folds: a curve run on fold 0 alone is reported without the other folds' runs of the same arms."""
    runs = [replace(run, key="k1") for run in collect_runs(_study_rows())]
    moved = [replace(run, fold=3, seed=run.seed + 10) for run in runs]
    save_archive(tmp_path / DEFAULT_ARCHIVE, runs + moved)
    monkeypatch.setattr(experiments, "exp_rows", lambda repo, revs: [])
    _compare(repo=str(tmp_path), key="k1", folds=[3], out=str(tmp_path / "r.md"))
    text = (tmp_path / "r.md").read_text()
    assert "| delta | — | all | 3 |" in text  # 3 of fold 3's runs, not 6 of both folds
    assert f"(`--folds`): {len(moved)} of the key's {2 * len(runs)}." in text
    assert compare_command(".", None, None, "k1", None, None, None, folds=[0]) == "llgbm compare --key k1 --folds 0"


def test_compare_without_markers_fails_before_reading_experiments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`llgbm compare --readme README.md` without markers: an LlgbmError, which the command prints as its one line
    `error: <message>` with exit status 2 (tests/test_bad_input.py runs the command itself)."""
    readme = tmp_path / "README.md"
    readme.write_text("# results\nno markers\n")

    def refuse(repo: str, revs: object) -> list:
        raise AssertionError("read experiments before checking the README")
    monkeypatch.setattr(experiments, "exp_rows", refuse)
    with pytest.raises(LlgbmError, match=f"^{re.escape(str(readme))}: needs one '{re.escape(README_BEGIN)}'"):
        _compare(readme=str(readme))
    assert readme.read_text() == "# results\nno markers\n" and not (tmp_path / "results").exists()


def test_plot_points_and_file(tmp_path: Path) -> None:
    rows = _study_rows() + [_row("w8", 0, 0.12, lambda_delta=0.0, max_training_tasks=8),
                            _row("w8b", 1, 0.16, lambda_delta=0.0, max_training_tasks=8),
                            _row("t8b", 1, 0.30, max_training_tasks=8)]
    series = heldout_vs_tasks(collect_runs(rows))
    weight_only = series["weight-only"]
    assert [p[0] for p in weight_only] == [8, 42]  # "all": the evaluation's seen.tasks
    assert weight_only[0][1] == pytest.approx(0.14) and weight_only[0][2] == pytest.approx(
        12.7062047362 * statistics.stdev([0.12, 0.16]) / math.sqrt(2))
    assert weight_only[1][1:] == pytest.approx(mean_ci([0.1, 0.2, 0.3]))
    assert series["delta"][0][0] == 8 and series["KL"] == [(42, 0.5, None)]
    path = tmp_path / "plots" / "p.png"
    write_plot(series, 0.1, path, {"base model": [(8, 0.15), (42, 0.15)]})
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_plot_references_per_training_task_count() -> None:
    rows = [_row("w0", 0, 0.1, lambda_delta=0.0), _row("d0", 0, 0.2),
            {**_row("w8", 0, 0.1, lambda_delta=0.0, max_training_tasks=8), "multitask_heldout_accuracy_mean": 0.05,
             "base_heldout_accuracy_mean": 0.15},
            _row("gone", 1, None, lambda_delta=0.0)]  # no metrics: no run, no point
    references = reference_points(collect_runs(rows))
    # every run reads the multi-task LoRA; only the 8-task one the base
    assert references == {"multi-task LoRA (reference)": [(8, 0.05), (42, 0.12)], "base model": [(8, 0.15)]}


def test_training_task_count_sources() -> None:
    runs = {r.seed: r for r in collect_runs([
        _row("a", 0, 0.1), _row("b", 1, 0.1, max_training_tasks=12),
        {**_row("c", 2, 0.1), "train_tasks": 30.0}, _row("d", 3, 0.1, tasks=(8.0, "None"))])}
    assert training_task_count([runs[0]]) == 42  # every task: the evaluation's seen tasks
    assert training_task_count([runs[1]]) == 12  # max_training_tasks
    assert training_task_count([runs[2]]) == 30  # a stage's own count first
    assert training_task_count([runs[3]]) is None  # nothing says: left out of the plot
    assert training_task_count([runs[0], runs[0], runs[2]]) == 42


def test_only_finished_experiments_count_and_failed_ones_are_failures() -> None:
    """A running or queued experiment shows its baseline's metrics files (dvc exp show), a failed one may
    show a partial result: none of them is a run of its arm with metrics. A failed one is its arm's
    failure, counted without any metric."""
    rows = [_row("done", 0, 0.3)]
    for state in ("Running", "Queued", "Failed"):
        rows.append({**_row(f"not-{state}", 1, 0.9), "State": state})
    rows.append({**_row("failed-again", 1, 0.9), "State": "Failed"})  # the same arm and seed: kept until keyed
    runs = collect_runs(rows)
    assert [(r.seed, r.metrics["heldout_accuracy"], r.failure) for r in runs] == [
        (0, 0.3, None), (1, None, "failed"), (1, None, "failed")]
    assert runs[1].name == "not-Failed" and set(runs[1].metrics.values()) == {None}
    assert [run.name for run in failed_replicates(runs)[runs[1].arm].values()] == ["not-Failed"]  # counted once


def test_failure_text_from_a_queue_log() -> None:
    log = ("train:  58%|#####8    | 1758/3000 [01:04<00:45, loss=2.5229]error: train: loss_behaviour is nan at step "
           "1759; no checkpoint written\r\ntrain:  58%|\nERROR: failed to reproduce 'train': exited with 2\n")
    assert failure_text(log) == "train: loss_behaviour is nan at step 1759; no checkpoint written"
    assert failure_text("ERROR: one\nERROR: out of memory\n") == "out of memory"
    assert failure_text("killed\n") == "failed (no error in its log)"


def test_report_counts_failed_seeds_and_keeps_them_out_of_every_mean() -> None:
    runs = collect_runs(_study_rows())
    kl_arm = next(r.arm for r in runs if r.name == "kl0")
    wo = next(r for r in runs if r.name == "w1")
    failures = [replace(wo, seed=s, metrics=dict.fromkeys(wo.metrics), arm=kl_arm, name=f"klf{s}", failure=f"nan at {s}")
                for s in (1, 2)]
    rerun = replace(failures[0], seed=0, name="klf0")  # seed 0 failed once, then finished: it counts as finished
    only_failed = replace(failures[0], arm=tuple((k, 3 if k == "probe_count" else v) for k, v in kl_arm),
                          name="gone", failure="inf grad")
    report = comparison_report(runs + failures + [rerun, only_failed])
    kl = _line(report, "| KL | — | all |")
    assert "| 1 (+2 failed) | 8 / 42 | 0.500 (1 seed, no CI) |" in kl
    assert kl.endswith("| +0.400 (1 seed, no CI) | +0.000 (1 seed, no CI) | — | — | — |")
    assert _line(report, "| KL | probe_count=3 | all | 0 (+1 failed) | ? / ? | — | — |")
    assert "- KL, max training tasks all, seed 1 (klf1): nan at 1" in report
    assert "- KL, max training tasks all, seed 2 (klf2): nan at 2" in report
    assert "- KL (probe_count=3), max training tasks all, seed 1 (gone): inf grad" in report
    assert "klf0" not in report
    assert "Failed runs" not in comparison_report(runs)


def test_failure_reason_where_the_queue_log_is_gone(tmp_path: Path) -> None:
    run = replace(collect_runs([_row("done", 0, 0.3)])[0], name="no-such-experiment", failure="failed")
    finished = collect_runs([_row("done", 0, 0.3)])[0]
    assert failure_reasons([run, finished], str(tmp_path)) == [replace(run, failure="failed (its queue log is gone)"),
                                                               finished]


def test_weight_norm_ratio_is_read_from_train_metrics_and_shown_as_a_range() -> None:
    rows = [{**_row("w0", 0, 0.1, lambda_delta=0.0), "weight_norm_ratio": 0.85},
            {**_row("w1", 1, 0.2, lambda_delta=0.0), "results/train/metrics.json:weight_norm_ratio": 0.9,
             "results/evaluate/metrics.json:weight_norm_ratio": 7.0},  # the train stage's, not another file's
            {**_row("o0", 0, 0.1, **{"train.lambda_weights": 0.0, "loss_balance": "none"}), "weight_norm_ratio": 333.2},
            {**_row("o1", 1, 0.1, **{"train.lambda_weights": 0.0, "loss_balance": "none"}),
             "weight_norm_ratio": 104000.0}]
    runs = collect_runs(rows)
    assert [r.metrics["weight_norm_ratio"] for r in runs] == [0.85, 0.9, 333.2, 104000.0]
    archived = replace(runs[1], metrics={k: v for k, v in runs[1].metrics.items() if k != "weight_norm_ratio"})
    report = comparison_report(runs)
    assert "| 0.100 ± 0.000 | 0.85–0.9 | reference |" in _line(report, "| weight-only |")
    assert "| 333–1.04e+05 | -0.050 ± 0.635 (2 seeds) |" in _line(report, "| delta-only |")
    older = comparison_report([runs[0], archived])  # archived before the report had the metric
    assert "| 0.85 (1 of 2 seeds) | reference |" in _line(older, "| weight-only |")


def test_report_pairs_a_conditioned_arm_with_its_prompt_blind_twin() -> None:
    sft = {"behaviour_loss": "sft", "train.behaviour_adapters": 8, "train.lambda_weights": 0.0, "loss_balance": "none"}
    rows = [_row(f"w{s}", s, 0.2, lambda_delta=0.0) for s in range(3)]
    rows += [_row(f"s{s}", s, 0.6 + 0.01 * s, **sft) for s in range(3)]
    rows += [_row(f"b{s}", s, 0.5, **sft, **{"generator.condition": "constant"}) for s in range(3)]
    report = comparison_report(collect_runs(rows))
    conditioned, blind = _line(report, "| SFT-only | — | all |"), _line(report, "| SFT-only, prompt-blind | — | all |")
    mean, half = mean_ci([0.1, 0.11, 0.12])
    assert conditioned.endswith(f"| {mean:+.3f} ± {half:.3f} (3 seeds) | — |")
    assert blind.endswith("| — | — |")  # a prompt-blind arm has no prompt-blind twin


def test_report_gives_the_seeds_by_tasks_interval_with_holm_over_its_family() -> None:
    from llgbm.study.crossed import crossed_mean, holm

    rows = [_row(f"w{s}", s, 0.2, lambda_delta=0.0) for s in range(3)]
    rows += [_row(f"d{s}", s, 0.3) for s in range(3)] + [_row(f"k{s}", s, 0.3, behaviour_loss="kl") for s in range(3)]
    runs = collect_runs(rows)
    gains = {"delta": [0.10, 0.14, 0.12, 0.09], "kl": [0.05, -0.06, 0.07, -0.03]}
    tasks = ["a", "b", "c", "d"]

    def per_task(run) -> dict:
        gain = [0.0] * 4 if run.name.startswith("w") else gains["kl" if run.name.startswith("k") else "delta"]
        out = {t: {"heldout": True, "generated": 0.2 + g + 0.01 * run.seed} for t, g in zip(tasks, gain)}
        return {**out, "seen": {"heldout": False, "generated": 0.9}}  # seen tasks never enter

    report = comparison_report([replace(r, per_task=per_task(r)) for r in runs])
    estimates = {name: crossed_mean({(s, t): g for s in range(3) for t, g in zip(tasks, gain)}) for name, gain in gains.items()}
    adjusted = holm({name: e.p_value for name, e in estimates.items()})
    delta, kl = _line(report, "| delta | — | all |"), _line(report, "| KL | — | all |")
    low, high = estimates["delta"].interval()
    assert delta.endswith(f"| +0.113 [{low:+.3f}, {high:+.3f}] (3 seeds × 4 tasks), p {adjusted['delta']:.3f}: better |")
    assert kl.endswith(f"p {adjusted['kl']:.3f}: not shown either way |")
    assert _line(report, "| weight-only | — | all |").endswith("| reference | — | — |")
    without = comparison_report(runs)  # runs archived before per-task results: no such cell
    assert _line(without, "| delta | — | all |").endswith("| — | — |")


def test_report_contrasts_objectives_in_a_family_of_their_own() -> None:
    """SFT - delta and SFT - SFT-only (CONTRASTS) where both ran: paired by seed and task, Holm over the
    contrasts only; a contrast whose second arm did not run (KL - delta here: no KL) is left out."""
    from llgbm.study.crossed import crossed_mean, holm

    sft = {"behaviour_loss": "sft", "train.behaviour_adapters": 8}
    arms = {"w": {"lambda_delta": 0.0}, "d": {}, "s": sft,
            "o": {**sft, "train.lambda_weights": 0.0, "loss_balance": "none"}}
    runs = collect_runs([_row(f"{name}{seed}", seed, 0.3, **knobs) for name, knobs in arms.items() for seed in range(3)])
    tasks = ["a", "b", "c"]
    gains = {"w": [0.0, 0.0, 0.0], "d": [0.01, 0.0, 0.02], "s": [0.30, 0.20, 0.25], "o": [0.28, 0.22, 0.21]}

    def per_task(run) -> dict:
        return {t: {"heldout": True, "generated": 0.2 + g + 0.03 * run.seed * (i == 1)}
                for i, (t, g) in enumerate(zip(tasks, gains[run.name[0]]))}

    report = comparison_report([replace(r, per_task=per_task(r)) for r in runs])
    estimates = {pair: crossed_mean({(seed, t): gains[pair[0]][i] - gains[pair[1]][i] for seed in range(3)
                                     for i, t in enumerate(tasks)}) for pair in (("s", "d"), ("s", "o"))}
    adjusted = holm({str(pair): e.p_value for pair, e in estimates.items()})
    section = report.split("Contrasts between objectives")[1]
    for pair, label in ((("s", "d"), "| SFT − delta | all |"), (("s", "o"), "| SFT − SFT-only | all |")):
        low, high = estimates[pair].interval()
        assert _line(section, label).endswith(
            f"| {estimates[pair].mean:+.3f} [{low:+.3f}, {high:+.3f}] (3 seeds × 3 tasks), p {adjusted[str(pair)]:.3f}: "
            f"{'better' if adjusted[str(pair)] < 0.05 else 'not shown either way'} |")
    assert "KL − delta" not in section and "multi-layer" not in section and "delta-only" not in section
    assert "Contrasts between objectives" not in comparison_report(runs)  # no per-task results: no contrasts


def test_folds_are_replicates_queued_per_fold_and_missing_per_fold_and_seed() -> None:
    """With heldout_folds, a run is one (fold, seed): a row's fold is read back, the grid queues one command per
    arm and fold, and --missing leaves out exactly the (fold, seed) pairs that ran."""
    [weight_only] = [a for a in study_arms(DEFAULTS, "objectives") if a["lambda_delta"] == 0.0]
    row = {**_row("w", 1, 0.2, lambda_delta=0.0), "heldout_folds": 5.0, "heldout_fold": 3.0}
    [run] = collect_runs([row])
    assert (run.fold, run.seed, run.replicate) == (3, 1, (3, 1))
    assert collect_runs([_row("w", 1, 0.2, lambda_delta=0.0)])[0].replicate == (experiments.NO_FOLD, 1)
    assert grid.study_folds({"heldout_folds": 5}, None, "p") == [0, 1, 2, 3, 4]
    assert grid.study_folds({"heldout_folds": 5}, [4, 0], "p") == [0, 4]
    assert grid.study_folds({"heldout_folds": None}, None, "p") is None
    with pytest.raises(LlgbmError, match="--folds: \\[5\\] outside 0..4"):
        grid.study_folds({"heldout_folds": 5}, [5], "p")
    with pytest.raises(LlgbmError, match="needs 'heldout_folds'"):
        grid.study_folds({"heldout_folds": None}, [0], "p")
    lines = queue_grid([0, 1], True, [weight_only], {(experiments.arm_of(weight_only), (3, 1))}, [2, 3])
    assert [line.split("-S heldout_fold=")[1] for line in lines] == ["2 -S seed=0,1", "3 -S seed=0"]


def test_integer_knobs_read_back_as_integers() -> None:
    """exp_show gives every number as a float; a knob that is an integer in params.yaml is one again."""
    row = {**_row("w", 1, 0.2, lambda_delta=0.0, **{"train.behaviour_adapters": 2.0}), "heldout_fold": 3.0,
           "heldout_folds": 5.0}
    [run] = collect_runs([row])
    assert type(dict(run.arm)["train.behaviour_adapters"]) is int and type(run.fold) is int


def test_report_pools_folds_pairing_by_fold_and_seed() -> None:
    """Runs of two folds (disjoint held-out tasks) pool into one row: seeds count (fold, seed) runs, the paired
    difference matches fold and seed, and the seeds x tasks cell combines the folds."""
    from llgbm.study.crossed import fold_stratified_mean

    folds = {0: ["a", "b"], 1: ["c", "d"]}
    rows = []
    for fold in folds:
        for s in range(3):
            extra = {"heldout_folds": 2.0, "heldout_fold": float(fold)}
            rows += [{**_row(f"w{fold}{s}", s, 0.2 + 0.1 * fold, lambda_delta=0.0), **extra},
                     {**_row(f"d{fold}{s}", s, 0.25 + 0.1 * fold + 0.01 * s), **extra}]
    runs = collect_runs(rows)

    def per_task(run) -> dict:
        gain = 0.0 if run.name.startswith("w") else 0.05 + 0.01 * run.seed
        return {t: {"heldout": True, "generated": 0.2 + 0.1 * run.fold + gain + 0.02 * i}
                for i, t in enumerate(folds[run.fold])}

    report = comparison_report([replace(r, per_task=per_task(r)) for r in runs])
    delta = _line(report, "| delta |")
    assert delta.split(" | ")[3] == "6"  # 2 folds x 3 seeds
    mean, half = mean_ci([0.05, 0.06, 0.07] * 2)
    assert f"| {mean:+.3f} ± {half:.3f} (6 seeds) |" in delta
    cells = {((r.fold, r.seed), t): 0.05 + 0.01 * r.seed for r in runs if r.name.startswith("d") for t in folds[r.fold]}
    estimate = fold_stratified_mean(cells)
    low, high = estimate.interval()
    assert f"| {estimate.mean:+.3f} [{low:+.3f}, {high:+.3f}] (2 folds, 3 seeds × 4 tasks), p " in delta
    per_fold = report.split("Per held-out fold")[1]
    assert _line(per_fold, "| delta (lambda_delta=1.0) |").endswith("| all | 0.260 (+0.060) | 0.360 (+0.060) | +0.060 to +0.060 |")
    assert _line(per_fold, "| weight-only |") == "| weight-only | all | 0.200 | 0.300 | — |"
    unfolded = comparison_report(collect_runs([_row("w", 0, 0.2, lambda_delta=0.0), _row("d", 0, 0.3)]))
    assert "Per held-out fold" not in unfolded


def test_validation_figures_and_below_chance_counts_are_read_from_exp_show() -> None:
    row = {**_row("v", 0, 0.3), "validation.accuracy.generated": 0.61, "validation.tasks": 10.0,
           "heldout.below_chance.generated": 2.0, "validation.below_chance.generated": 0.0}
    [run] = collect_runs([row])
    assert run.metrics["validation_accuracy"] == 0.61
    assert (run.counts["validation_tasks"], run.counts["heldout_below_chance"], run.counts["validation_below_chance"]) == (10, 2, 0)
    [without] = collect_runs([_row("w", 0, 0.3)])  # an evaluation without validation tasks
    assert without.metrics["validation_accuracy"] is None and without.counts["heldout_below_chance"] is None


def _factor_runs() -> list:
    """Two arms x 2 seeds with per-task results of compositional tasks (and one task of another family);
    SFT-only's knobs name its lambda_delta (two arms: no common value)."""
    sft_only = {"behaviour_loss": "sft", "train.behaviour_adapters": 8, "train.lambda_weights": 0.0, "loss_balance": "none"}
    runs = collect_runs([_row(f"w{s}", s, 0.2, lambda_delta=0.0) for s in range(2)]
                        + [_row(f"o{s}", s, 0.5, **sft_only) for s in range(2)])

    def per_task(run: experiments.Run) -> dict:
        gain = 0.0 if run.name.startswith("w") else 0.5
        return {"largest_mirror": {"heldout": True, "generated": 0.1 + 0.1 * run.seed + gain},
                "median_mirror": {"heldout": True, "generated": 0.3},
                "median_plus_two": {"heldout": True, "generated": 0.9},
                "largest_plus_two": {"heldout": False, "generated": 1.0},  # seen: not in the held-out tables
                "color_first": {"heldout": True, "generated": 0.0}}  # not a (selector, transform) pair

    return [replace(run, key="k1", per_task=per_task(run)) for run in runs]


def test_compare_by_factor_reads_accuracy_per_transform_and_selector(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The section on validation and factors appears only when asked (`--by-factor`) for runs without validation
    figures or below-chance counts (so the blocks of older studies are written as they were), and computes the
    held-out accuracy per transform and per selector over task-runs from the archived per-task results."""
    from llgbm.study.factor_report import factor_section

    runs = _factor_runs()
    assert factor_section(runs) == "" and "Validation and factors" not in comparison_report(runs)
    section = factor_section(runs, asked=True)
    assert "validation accuracy" not in section  # no run has validation figures: no such column
    assert _line(section, "| weight-only | — | all | 2 |") == "| weight-only | — | all | 2 | — |"  # counts not recorded
    by_transform = section.split("Held-out accuracy by transform")[1]
    assert _line(by_transform, "| arm |") == "| arm | knobs | max training tasks | task-runs | plus_two | mirror |"
    assert _line(by_transform, "| weight-only |") == "| weight-only | — | all | 6 | 0.900 | 0.225 |"
    assert _line(by_transform, "| SFT-only |") == "| SFT-only | lambda_delta=1.0 | all | 6 | 0.900 | 0.475 |"
    by_selector = section.split("Held-out accuracy by selector")[1]
    assert _line(by_selector, "| arm |").endswith("| largest | median |")
    assert _line(by_selector, "| weight-only |") == "| weight-only | — | all | 6 | 0.150 | 0.600 |"
    assert "Validation accuracy by" not in section
    readme = tmp_path / "results.md"
    readme.write_text(f"{README_BEGIN}\n{README_END}\n")
    save_archive(tmp_path / DEFAULT_ARCHIVE, runs)
    monkeypatch.setattr(experiments, "exp_rows", lambda repo, revs: [])
    _compare(repo=str(tmp_path), key="k1", readme=str(readme), by_factor=True)
    assert "--key k1 --readme" in readme.read_text() and "--by-factor`" in readme.read_text()
    assert "Held-out accuracy by transform" in readme.read_text()
    assert "Held-out accuracy by transform" not in _compare(repo=str(tmp_path), key="k1")


def test_compare_shows_validation_and_below_chance_where_runs_record_them() -> None:
    """Runs of issue 34's evaluation (validation tasks, below-chance counts): the section appears unasked, with
    validation accuracy, the task-runs below chance summed over runs, and validation accuracy by factor."""
    from llgbm.study.factor_report import factor_section

    runs = _factor_runs()
    validated = [replace(run, metrics={**run.metrics, "validation_accuracy": 0.6 + 0.1 * run.seed},
                         counts={**run.counts, "heldout_below_chance": 1 + run.seed, "validation_tasks": 2,
                                 "validation_below_chance": 0},
                         per_task={**(run.per_task or {}),
                                   "smallest_minus_one": {"heldout": False, "group": "validation", "generated": 0.4}})
                 for run in runs if run.name.startswith("o")]
    section = factor_section(runs[:2] + validated[:1])  # unasked; one of SFT-only's two runs recorded
    assert _line(section, "| arm |").endswith("| runs | validation accuracy | validation task-runs below chance "
                                               "| held-out task-runs below chance |")
    sft_only = "| SFT-only | lambda_delta=1.0 | all |"
    assert _line(section, sft_only) == f"{sft_only} 1 | 0.600 (1 run, no CI) | 0 of 2 | 1 of 8 |"
    assert _line(section, "| weight-only | — | all |") == "| weight-only | — | all | 2 | — | — | — |"
    both = factor_section(runs[:2] + validated)
    mean, half = mean_ci([0.6, 0.7])
    assert _line(both, sft_only) == f"{sft_only} 2 | {mean:.3f} ± {half:.3f} | 0 of 4 | 3 of 16 |"
    partial = factor_section(runs[:2] + [validated[0], runs[3]])
    assert _line(partial, "| SFT-only | lambda_delta=1.0 | all |").endswith(
        "| 0.600 (1 run, no CI) (1 of 2 runs) | 0 of 2 (1 of 2 runs) | 1 of 8 (1 of 2 runs) |")
    by_transform = both.split("Validation accuracy by transform")[1]
    assert _line(by_transform, "| SFT-only |") == "| SFT-only | lambda_delta=1.0 | all | 2 | 0.400 |"
    assert _line(by_transform, "| weight-only |") == "| weight-only | — | all | 0 | — |"
    # the validation tasks' rows are not in the held-out tables
    assert f"{sft_only} 6 | 0.900 | 0.475 |" in both.split("Held-out accuracy by transform")[1]
