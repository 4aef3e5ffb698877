"""The `llgbm` command: benchmarks and tools around the pipeline (the stages run under dvc repro).

Each subcommand imports its module when it runs (not to dodge an import cycle: there is none), so that
`llgbm --help` or a usage error answers without loading torch, transformers and DVC."""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from llgbm.config import load_config
from llgbm.infra.errors import LlgbmError


def _bench_delta(args: argparse.Namespace) -> None:
    from llgbm.bench import bench_delta

    cfg = load_config(args.params)
    result = bench_delta(cfg, args.models, args.adapters, args.repeats, args.probes, args.probe_length,
                         args.device, args.dtype)
    print(json.dumps(result, indent=2))


def _bench_train(args: argparse.Namespace) -> None:
    from llgbm.bench import bench_train

    print(json.dumps(bench_train(load_config(args.params), args.steps), indent=2))


def _bench_teachers(args: argparse.Namespace) -> None:
    from llgbm.bench import bench_teachers

    print(json.dumps(bench_teachers(load_config(args.params), args.tasks, args.steps), indent=2))


def _generate(args: argparse.Namespace) -> None:
    from llgbm.recipes.generate import generate_from_file

    timings = generate_from_file(args.generator, args.prompts, args.out, args.base, args.force)
    print(f"wrote {args.out} from {timings['prompts_used']} of {timings['prompts_given']} prompts in "
          f"{timings['total_seconds']:.3f} s (encode {timings['encode_seconds']:.3f} s, generate "
          f"{timings['generate_seconds']:.3f} s, save {timings['save_seconds']:.3f} s; model loading excluded)")


def _grid(args: argparse.Namespace) -> None:
    from llgbm.config import to_dict
    from llgbm.study.experiments import knob_defaults, queue_grid, study_arms

    defaults = knob_defaults(to_dict(load_config(args.params)), args.params)
    arms = study_arms(defaults, args.study, args.params)
    have = None
    if args.missing:
        from llgbm.study.experiments import collect_runs, exp_rows, pending_runs
        from llgbm.study.run_archive import DEFAULT_ARCHIVE, keyed, load_archive, workspace_key

        archived = load_archive(DEFAULT_ARCHIVE)
        rows = exp_rows(".")
        key = workspace_key(".")
        # A failed (arm, seed) is not queued again: the same code and params would fail the same way.
        done = [r for r in archived + keyed(collect_runs(rows), ".")[0] if r.key == key]
        pending = pending_runs(rows)
        have = {(r.arm, r.seed) for r in done} | pending
        print(f"--missing: {len({(r.arm, r.seed) for r in done if r.failure is None})} finished and "
              f"{len({(r.arm, r.seed) for r in done if r.failure is not None})} failed runs of key {key}, "
              f"{len(pending)} queued or running, are not queued again")
    for line in queue_grid(args.seeds, args.dry_run, arms, have):
        print(line)


def _compare_command(args: argparse.Namespace) -> str:
    """The command line that regenerates what this `llgbm compare` writes (from the archive: --record is
    not needed again)."""
    words = ["llgbm", "compare"]
    if args.repo != ".":
        words += ["--repo", args.repo]
    if args.rev:
        words += ["--rev", *args.rev]
    for option in ("runs", "key", "out", "readme", "plot"):
        if getattr(args, option):
            words += [f"--{option}", str(getattr(args, option))]
    return shlex.join(words)


def _compare(args: argparse.Namespace) -> None:
    from llgbm.infra.io import read_json, read_text, write_bytes_atomic
    from llgbm.infra.provenance import machine_description
    from llgbm.study.experiments import (
        DEFAULT_PLOT,
        DIAGNOSTICS,
        chance_level,
        collect_runs,
        comparison_report,
        exp_rows,
        experiment_commits,
        failure_reasons,
        heldout_vs_tasks,
        readme_block,
        reference_points,
        replace_marked,
        study_seeds,
        write_plot,
    )
    from llgbm.study.run_archive import (
        DEFAULT_ARCHIVE,
        archive_notes,
        keyed,
        load_archive,
        merge_runs,
        new_failures,
        save_archive,
        workspace_key,
    )

    readme = Path(args.readme) if args.readme else None
    readme_text = read_text(readme, "README") if readme else None
    if readme_text is not None:
        replace_marked(readme_text, "", str(readme))  # no markers: stop before the slow part
    archive = Path(args.runs) if args.runs else Path(args.repo) / DEFAULT_ARCHIVE
    archived = load_archive(archive)  # a bad archive: stop before the slow part too
    rows = exp_rows(args.repo, args.rev)  # not a DVC repository: say that first
    key = args.key or workspace_key(args.repo)
    new, unkeyed = keyed(collect_runs(rows), args.repo)
    # Why a run failed lives in DVC's queue log, on this machine only: read once, then kept in the archive.
    failures = new_failures(archived, new)
    explained = dict(zip(map(id, failures), failure_reasons(failures, args.repo)))
    runs, disagreements = merge_runs(archived, [explained.get(id(r), r) for r in new])
    if args.record:
        save_archive(archive, runs)
        print(f"recorded {len(runs) - len(archived)} new runs in {archive} ({len(runs)} in all)")
    selected = [run for run in runs if run.key == key]
    workspace_diagnostics = Path(args.repo) / DIAGNOSTICS
    fallback = read_json(workspace_diagnostics, "diagnostics metrics") if workspace_diagnostics.is_file() else None
    report = comparison_report(selected, fallback) + archive_notes(key, runs, unkeyed, disagreements, archive)
    print(report, end="")
    if args.out:
        write_bytes_atomic(Path(args.out), report.encode())
    plot = Path(args.plot) if args.plot else (readme.parent / DEFAULT_PLOT if readme else None)
    plotted = False
    if plot is not None:
        series = heldout_vs_tasks(selected)
        if series:
            write_plot(series, chance_level(selected, fallback), plot, reference_points(selected))
            plotted = True
            print(f"wrote {plot}")
        else:
            print(f"no plot: no finished run with a known number of training tasks (not written: {plot})")
    if readme is not None and readme_text is not None:
        block = readme_block(report, machine=machine_description(), seeds=study_seeds(selected),
                             commits=experiment_commits(args.repo, selected), command=_compare_command(args),
                             plot=Path(os.path.relpath(plot, readme.parent)).as_posix() if plotted and plot else None)
        write_bytes_atomic(readme, replace_marked(readme_text, block, str(readme)).encode())
        print(f"wrote the results between the markers of {readme}")


def _diagnostics_table(args: argparse.Namespace) -> None:
    from llgbm.infra.io import read_text, write_bytes_atomic
    from llgbm.infra.paths import DIAGNOSTICS_REPORT
    from llgbm.infra.provenance import machine_description
    from llgbm.study.experiments import replace_marked, resolve_commit

    readme = Path(args.readme)
    readme_text = read_text(readme, "README")
    replace_marked(readme_text, "", str(readme), "diagnostics")  # no markers: stop before reading anything else
    report = read_text(Path(args.repo) / DIAGNOSTICS_REPORT, "diagnostics report; run `dvc repro diagnostics`")
    table = report.split("\n", 1)[1].strip() if report.startswith("# ") else report.strip()  # its title is README's
    command = shlex.join(["llgbm", "diagnostics-table", "--readme", args.readme]
                         + (["--repo", args.repo] if args.repo != "." else []))
    block = "\n".join([f"_Written by `{command}` from `{DIAGNOSTICS_REPORT}` (the `diagnostics` stage); edit the "
                       "command, not this text._", "", f"- machine: {machine_description()}",
                       f"- workspace commit: {resolve_commit(args.repo, 'HEAD') or 'unknown (no git commit)'}", "",
                       table])
    write_bytes_atomic(readme, replace_marked(readme_text, block, str(readme), "diagnostics").encode())
    print(f"wrote the diagnostics table between the markers of {readme}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llgbm")
    commands = parser.add_subparsers(dest="command", required=True)
    generate = commands.add_parser("generate", help="write a PEFT adapter generated from a file of prompts")
    generate.add_argument("--generator", required=True, help="a trained generator directory (models/generator)")
    generate.add_argument("--prompts", required=True, help=".txt (one per line), .json or .jsonl")
    generate.add_argument("--out", required=True,
                          help="the PEFT adapter directory to write: new or empty (or an llgbm adapter, with --force)")
    generate.add_argument("--force", action="store_true",
                          help="replace --out if it holds an adapter llgbm wrote (never anything else)")
    generate.add_argument("--base", default=None, help="base model directory (default: the one it was trained on)")
    generate.set_defaults(run=_generate)
    grid = commands.add_parser(
        "grid", help="queue issue 11's study (or the old ablation grid) as DVC experiments",
        description="Queue one `dvc exp run --queue` per arm, swept over --seeds; other knobs at --params' values. "
                    "objectives: weight-only, delta, per-probe delta, multi-layer delta, KL, delta-only, KL-only "
                    "(the -only arms: train.lambda_weights=0 with loss_balance=none); lambdas: lambda_delta "
                    "0.1, 1, 5 of the delta objective; task_counts: max_training_tasks 8, 12, 24 and all (null) "
                    "for weight-only, delta and KL (8 is the smallest: 8 held-out pairs over 8 transforms need "
                    "their selectors and transforms in training); all: the three, each arm once; ablations: the "
                    "spec's one-knob-at-a-time grid.")
    grid.add_argument("--params", default="params.yaml")
    grid.add_argument("--study", choices=["objectives", "lambdas", "task_counts", "all", "ablations"], default="all")
    grid.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    grid.add_argument("--dry-run", action="store_true", help="print the dvc commands without queueing")
    grid.add_argument("--missing", action="store_true",
                      help="queue only the (arm, seed) runs that the run archive and DVC's experiments lack for the "
                           "workspace's key (finished, failed, queued or running ones are not queued again)")
    grid.set_defaults(run=_grid)
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
    compare.add_argument("--out", default=None, help="also write the markdown report here")
    compare.add_argument("--readme", default=None,
                         help="replace what lies between the '<!-- compare:begin -->' and '<!-- compare:end -->' "
                              "lines of this file with the report, machine, seeds, commits and the plot")
    compare.add_argument("--plot", default=None,
                         help="write held-out accuracy against training tasks here (PNG; default with --readme: "
                              "results/compare/heldout_vs_tasks.png beside it)")
    compare.set_defaults(run=_compare)
    diagnostics = commands.add_parser("diagnostics-table",
                                      help="put the diagnostics stage's table between README's diagnostics markers")
    diagnostics.add_argument("--readme", default="docs/results.md")
    diagnostics.add_argument("--repo", default=".", help="the workspace whose results/diagnostics/report.md is read")
    diagnostics.set_defaults(run=_diagnostics_table)
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
    delta.set_defaults(run=_bench_delta)
    train = bench_kinds.add_parser("train", help="seconds per training step, with the delta loss vs weight-only")
    train.add_argument("--params", default="params.yaml")
    train.add_argument("--steps", type=int, default=100)
    train.set_defaults(run=_bench_train)
    teachers = bench_kinds.add_parser("teachers", help="teachers trained together vs one after another")
    teachers.add_argument("--params", default="params.yaml")
    teachers.add_argument("--tasks", type=int, default=None, help="the first N tasks of params (default: all)")
    teachers.add_argument("--steps", type=int, default=40)
    teachers.set_defaults(run=_bench_teachers)
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
