"""The `llgbm` command: benchmarks and tools around the pipeline (the stages run under dvc repro).

Each subcommand imports its module when it runs (not to dodge an import cycle: there is none), so that
`llgbm --help` or a usage error answers without loading torch, transformers and DVC."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from llgbm.config import load_config
from llgbm.infra.errors import LlgbmError


def _bench_delta(args: argparse.Namespace) -> None:
    from llgbm.bench.delta import bench_delta

    cfg = load_config(args.params)
    result = bench_delta(cfg, args.models, args.adapters, args.repeats, args.probes, args.probe_length,
                         args.device, args.dtype, args.fit_limit)
    print(json.dumps(result, indent=2))


def _bench_train(args: argparse.Namespace) -> None:
    from llgbm.bench.train import bench_train

    print(json.dumps(bench_train(load_config(args.params), args.steps), indent=2))


def _bench_evaluate(args: argparse.Namespace) -> None:
    from llgbm.bench.evaluate import bench_evaluate

    print(json.dumps(bench_evaluate(load_config(args.params), args.adapters, args.repeats), indent=2))


def _bench_teachers(args: argparse.Namespace) -> None:
    from llgbm.bench.teachers import bench_teachers

    print(json.dumps(bench_teachers(load_config(args.params), args.tasks, args.steps, args.repeats), indent=2))


def _generate(args: argparse.Namespace) -> None:
    from llgbm.recipes.generate import generate_from_file

    timings = generate_from_file(args.generator, args.prompts, args.out, args.base, args.force)
    print(f"wrote {args.out} from {timings['prompts_used']} of {timings['prompts_given']} prompts in "
          f"{timings['total_seconds']:.3f} s (encode {timings['encode_seconds']:.3f} s, generate "
          f"{timings['generate_seconds']:.3f} s, save {timings['save_seconds']:.3f} s; model loading excluded)")


def _grid(args: argparse.Namespace) -> None:
    from llgbm.study.grid import grid

    grid(params=args.params, study=args.study, arm_names=args.arms, seeds=args.seeds, folds=args.folds,
         missing=args.missing, dry_run=args.dry_run, echo=lambda text: print(text, end=""))


def _compare(args: argparse.Namespace) -> None:
    from llgbm.study.compare import compare

    compare(repo=args.repo, revs=args.rev, runs=args.runs, record=args.record, key=args.key, out=args.out,
            readme=args.readme, plot=args.plot, echo=lambda text: print(text, end=""), block=args.block,
            folds=args.folds, by_factor=args.by_factor)


def _select(args: argparse.Namespace) -> None:
    from llgbm.study.select import select

    select(repo=args.repo, revs=args.rev, runs=args.runs, key=args.key, folds=args.folds,
           echo=lambda text: print(text, end=""))


def _diagnostics_table(args: argparse.Namespace) -> None:
    from llgbm.study.diagnostics_table import diagnostics_table

    print(diagnostics_table(args.readme, args.repo))


# --- the parser: one function per subcommand --------------------------------------------------------

def _add_generate(commands: argparse._SubParsersAction) -> None:
    generate = commands.add_parser("generate", help="write a PEFT adapter generated from a file of prompts")
    generate.add_argument("--generator", required=True, help="a trained generator directory (models/generator)")
    generate.add_argument("--prompts", required=True, help=".txt (one per line), .json or .jsonl")
    generate.add_argument("--out", required=True,
                          help="the PEFT adapter directory to write: new or empty (or an llgbm adapter, with --force)")
    generate.add_argument("--force", action="store_true",
                          help="replace --out if it holds an adapter llgbm wrote (never anything else)")
    generate.add_argument("--base", default=None, help="base model directory (default: the one it was trained on)")
    generate.set_defaults(run=_generate)


def _add_grid(commands: argparse._SubParsersAction) -> None:
    grid = commands.add_parser(
        "grid", help="queue issue 11's study (or the old ablation grid) as DVC experiments",
        description="Queue one `dvc exp run --queue` per arm, swept over --seeds; other knobs at --params' values. "
                    "objectives: weight-only, delta, per-probe delta, multi-layer delta, KL, delta-only, KL-only, SFT, "
                    "SFT-only and SFT-only prompt-blind "
                    "(the -only arms: train.lambda_weights=0 with loss_balance=none); lambdas: lambda_delta "
                    "0.1, 1, 5 of the delta objective; task_counts: max_training_tasks 12, 24 and all (null) "
                    "for weight-only, delta and SFT; all: the three, each arm once; ablations: the spec's "
                    "one-knob-at-a-time grid. With heldout_folds set, every fold (or --folds) is queued.")
    grid.add_argument("--params", default="params.yaml")
    grid.add_argument("--study", choices=["objectives", "lambdas", "task_counts", "all", "ablations"], default="all")
    grid.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    grid.add_argument("--folds", nargs="+", type=int, default=None,
                      help="with heldout_folds set in --params: the folds to run (default: every fold)")
    grid.add_argument("--arms", nargs="+", default=None, metavar="OBJECTIVE",
                      help="only these arms of --study, by name as the report writes them (e.g. delta SFT "
                           "'SFT-only, prompt-blind'), queued in this order (default: every arm)")
    grid.add_argument("--dry-run", action="store_true", help="print the dvc commands without queueing")
    grid.add_argument("--missing", action="store_true",
                      help="queue only the (arm, seed) runs that the run archive and DVC's experiments lack for the "
                           "workspace's key (finished, failed, queued or running ones are not queued again)")
    grid.set_defaults(run=_grid)


def _add_compare(commands: argparse._SubParsersAction) -> None:
    compare = commands.add_parser(
        "compare", help="report each arm against the weight-only arm, paired by seed",
        description="Finished runs (the run archive and the DVC experiments) of one key, grouped by arm: mean "
                    "± 95% t interval over seeds, the paired difference from the weight-only arm of the same "
                    "max_training_tasks, the testbed's diagnostics baselines as extra rows.")
    compare.add_argument("--repo", default=".")
    compare.add_argument("--rev", nargs="+", default=None,
                         help="the commits whose DVC experiments to read beside the archive (default: every commit "
                              "that has experiments)")
    compare.add_argument("--runs", default=None,
                         help="the run archive (default: results/study/runs.json in --repo), kept in git")
    compare.add_argument("--record", action="store_true",
                         help="add the finished DVC experiments to the run archive (nothing in it is replaced)")
    compare.add_argument("--key", default=None,
                         help="report the runs of this key (default: the workspace run's: its code, params and "
                              "libraries)")
    compare.add_argument("--folds", nargs="+", type=int, default=None,
                         help="only the runs that held out these folds (e.g. --folds 0 for the task-count curve, "
                              "which runs on fold 0 alone)")
    compare.add_argument("--by-factor", action="store_true",
                         help="add the section on validation and factors: validation accuracy, task-runs below "
                              "chance, held-out (and validation) accuracy by transform and by selector (shown "
                              "without asking where a run records validation figures or below-chance counts)")
    compare.add_argument("--out", default=None, help="also write the markdown report here")
    compare.add_argument("--block", default="compare",
                         help="with --readme: the markers to write between, <!-- BLOCK:begin/end --> (default: compare)")
    compare.add_argument("--readme", default=None,
                         help="replace what lies between the '<!-- compare:begin -->' and '<!-- compare:end -->' "
                              "lines of this file with the report, machine, seeds, commits and the plot")
    compare.add_argument("--plot", default=None,
                         help="write held-out accuracy against training tasks here (PNG; default with --readme: "
                              "results/compare/heldout_vs_tasks.png beside it)")
    compare.set_defaults(run=_compare)


def _add_select(commands: argparse._SubParsersAction) -> None:
    select = commands.add_parser(
        "select", help="rank the arms of one key by validation accuracy and name the chosen one",
        description="Hyperparameters are chosen on validation tasks (validation_tasks: training tasks of the fold "
                    "kept out of training), never on the held-out fold: the arms of one key ranked by the mean "
                    "over their runs of the generated adapters' validation accuracy, with the number of runs, the "
                    "standard error over runs and the difference from the chosen arm paired by fold and seed. "
                    "No held-out result is read.")
    select.add_argument("--repo", default=".")
    select.add_argument("--rev", nargs="+", default=None,
                        help="the commits whose DVC experiments to read beside the archive (default: every commit "
                             "that has experiments)")
    select.add_argument("--runs", default=None, help="the run archive (default: results/study/runs.json in --repo)")
    select.add_argument("--key", default=None, help="rank the runs of this key (default: the workspace run's)")
    select.add_argument("--folds", nargs="+", type=int, default=None, help="only the runs that held out these folds")
    select.set_defaults(run=_select)


def _add_diagnostics_table(commands: argparse._SubParsersAction) -> None:
    diagnostics = commands.add_parser("diagnostics-table",
                                      help="put the diagnostics stage's table between a document's diagnostics markers")
    # Required: the table is stamped with this machine and commit, so no document is rewritten unless named.
    diagnostics.add_argument("--readme", required=True, help="the document to write into, e.g. docs/results.md")
    diagnostics.add_argument("--repo", default=".", help="the workspace whose results/diagnostics/report.md is read")
    diagnostics.set_defaults(run=_diagnostics_table)


def _add_bench(commands: argparse._SubParsersAction) -> None:
    bench = commands.add_parser("bench", help="benchmarks; each prints one JSON object")
    bench_kinds = bench.add_subparsers(dest="kind", required=True)
    delta = bench_kinds.add_parser("delta", help="batched delta vs one-at-a-time, PEFT and the base-model floor")
    delta.add_argument("--params", default="params.yaml")
    delta.add_argument("--models", nargs="+", default=["embedded-default", "qwen2.5-0.5b"],
                       choices=["embedded-default", "qwen2.5-0.5b", "qwen2.5-1.5b"])
    delta.add_argument("--adapters", nargs="+", type=int, default=[1, 4, 8])
    delta.add_argument("--repeats", type=int, default=3)
    delta.add_argument("--probes", type=int, default=None, help="default: probe_count (tiny), 2 (0.5B), 8 (1.5B)")
    delta.add_argument("--probe-length", type=int, default=None, help="default: 12 (tiny), 16 (0.5B), 128 (1.5B)")
    delta.add_argument("--device", default="cpu")
    delta.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    delta.add_argument("--fit-limit", type=int, default=0,
                       help="on a GPU: also search the largest adapters per step that fit, up to this many (0: skip)")
    delta.set_defaults(run=_bench_delta)
    train = bench_kinds.add_parser("train", help="seconds per training step of every objective vs weight-only")
    train.add_argument("--params", default="params.yaml")
    train.add_argument("--steps", type=int, default=100, help="timed steps of every objective (after 5 warm-up steps)")
    train.set_defaults(run=_bench_train)
    evaluate = bench_kinds.add_parser("evaluate", help="one task's adapters measured batched vs loaded through PEFT")
    evaluate.add_argument("--params", default="params.yaml")
    evaluate.add_argument("--adapters", type=int, default=8)
    evaluate.add_argument("--repeats", type=int, default=3)
    evaluate.set_defaults(run=_bench_evaluate)
    teachers = bench_kinds.add_parser("teachers", help="teachers trained together vs one after another")
    teachers.add_argument("--params", default="params.yaml")
    teachers.add_argument("--tasks", type=int, default=None, help="the first N tasks of params (default: all)")
    teachers.add_argument("--steps", type=int, default=40)
    teachers.add_argument("--repeats", type=int, default=1, help="timed rounds after the warm-up round (default 1)")
    teachers.set_defaults(run=_bench_teachers)


def _summary(args: argparse.Namespace) -> None:
    from llgbm.study.summary import summary

    print(summary(Path(args.repo)))


def _add_summary(commands: argparse._SubParsersAction) -> None:
    summary = commands.add_parser("summary", help="the first numbers to read, from results/<stage>/metrics.json")
    summary.add_argument("--repo", default=".", help="the workspace whose results/ is read")
    summary.set_defaults(run=_summary)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llgbm")
    commands = parser.add_subparsers(dest="command", required=True)
    for add in (_add_generate, _add_grid, _add_compare, _add_select, _add_diagnostics_table, _add_summary, _add_bench):
        add(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except LlgbmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
