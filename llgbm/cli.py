"""The `llgbm` command: benchmarks and tools around the pipeline (the stages run under dvc repro).

Each subcommand imports its module when it runs (not to dodge an import cycle: there is none), so that
`llgbm --help` or a usage error answers without loading torch, transformers and DVC."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .config import load_config
from .errors import LlgbmError


def _bench_delta(args: argparse.Namespace) -> None:
    from .bench import bench_delta

    cfg = load_config(args.params)
    result = bench_delta(cfg, args.models, args.adapters, args.repeats, args.probes, args.probe_length,
                         args.device, args.dtype)
    print(json.dumps(result, indent=2))


def _bench_train(args: argparse.Namespace) -> None:
    from .bench import bench_train

    print(json.dumps(bench_train(load_config(args.params), args.steps), indent=2))


def _bench_teachers(args: argparse.Namespace) -> None:
    from .bench import bench_teachers

    print(json.dumps(bench_teachers(load_config(args.params), args.tasks, args.steps), indent=2))


def _generate(args: argparse.Namespace) -> None:
    from .generate import generate_from_file

    timings = generate_from_file(args.generator, args.prompts, args.out, args.base, args.force)
    print(f"wrote {args.out} from {timings['prompts_used']} of {timings['prompts_given']} prompts in "
          f"{timings['total_seconds']:.3f} s (encode {timings['encode_seconds']:.3f} s, generate "
          f"{timings['generate_seconds']:.3f} s, save {timings['save_seconds']:.3f} s; model loading excluded)")


def _grid(args: argparse.Namespace) -> None:
    from .config import to_dict
    from .experiments import ARM_KEYS, grid_arms, queue_grid

    defaults = {k: v for k, v in to_dict(load_config(args.params)).items() if k in ARM_KEYS}
    for line in queue_grid(args.seeds, args.dry_run, grid_arms(defaults)):
        print(line)


def _compare(args: argparse.Namespace) -> None:
    from .experiments import comparison_report, exp_rows

    report = comparison_report(exp_rows(args.repo))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(report)
    print(report, end="")


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
    grid = commands.add_parser("grid", help="queue the spec's ablation grid as DVC experiments")
    grid.add_argument("--params", default="params.yaml")
    grid.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    grid.add_argument("--dry-run", action="store_true", help="print the dvc commands without queueing")
    grid.set_defaults(run=_grid)
    compare = commands.add_parser("compare", help="report each grid arm against the weight-only baseline")
    compare.add_argument("--repo", default=".")
    compare.add_argument("--out", default=None, help="also write the markdown report here")
    compare.set_defaults(run=_compare)
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
