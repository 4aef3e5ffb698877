"""The `llgbm` command: benchmarks and tools around the pipeline (the stages run under dvc repro)."""
from __future__ import annotations

import argparse
import json
import sys

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llgbm")
    commands = parser.add_subparsers(dest="command", required=True)
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
