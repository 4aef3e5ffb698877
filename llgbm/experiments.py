"""The ablation grid as queued DVC experiments, and the comparison it exists to make."""
from __future__ import annotations

import math
import statistics
import subprocess
from typing import Any

import dvc.api

# The spec's ablations: one knob at a time (others at params.yaml's values), plus one interaction.
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
ARM_KEYS = ("lambda_delta", "delta_loss_type", "probe_count", "lambda_schedule", "delta_reduce", "delta_layers",
            "loss_balance", "behaviour_loss")
# What the comparison reports: held-out accuracy and gain share of generated adapters, delta cosine.
KEY_METRICS = {
    "heldout_accuracy": "heldout.accuracy.generated",
    "heldout_gain_share": "heldout.gain_share.generated",
    "heldout_delta_cosine": "heldout.delta_cosine_mean.generated",
    "seen_accuracy": "seen.accuracy.generated",
}
# t(0.975, n - 1) for the 95% confidence interval of a mean over n seeds.
T_975 = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776, 6: 2.571, 7: 2.447, 8: 2.365, 9: 2.306, 10: 2.262}


def grid_arms(defaults: dict[str, Any]) -> list[dict[str, Any]]:
    """The grid's arms with every knob spelled out (others at `defaults`, params.yaml's values); an arm
    equal to another (e.g. delta_loss_type=mse when mse is the default) is queued once."""
    overrides: list[dict[str, Any]] = []
    for key, values in SINGLE_AXES.items():
        overrides += [{key: v} for v in values]
    overrides += [{"lambda_delta": ld, "delta_loss_type": lt} for ld in INTERACTION["lambda_delta"]
                  for lt in INTERACTION["delta_loss_type"]]
    arms: list[dict[str, Any]] = []
    for override in overrides:
        arm = {k: override.get(k, defaults[k]) for k in ARM_KEYS}
        if arm not in arms:
            arms.append(arm)
    return arms


def queue_commands(arms: list[dict[str, Any]], seeds: list[int]) -> list[list[str]]:
    seed_values = ",".join(str(s) for s in seeds)
    return [["dvc", "exp", "run", "--queue", *[a for k, v in arm.items() for a in ("-S", f"{k}={v}")],
             "-S", f"seed={seed_values}"] for arm in arms]


def queue_grid(seeds: list[int], dry_run: bool, arms: list[dict[str, Any]]) -> list[str]:
    lines = []
    for command in queue_commands(arms, seeds):
        lines.append(" ".join(command))
        if not dry_run:
            subprocess.run(command, check=True)
    return lines


def mean_ci(values: list[float]) -> tuple[float, float | None]:
    """Mean and half-width of its 95% confidence interval (t distribution; None for one seed)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None
    t = T_975.get(len(values), 1.96)
    return mean, t * statistics.stdev(values) / math.sqrt(len(values))


def _lookup(row: dict, name: str) -> Any:
    """A param or metric of a dvc.api.exp_show row, with or without its file prefix."""
    if name in row:
        return row[name]
    for key, value in row.items():
        if key.endswith(f":{name}") or key.endswith(f".yaml:{name}"):
            return value
    return None


def group_runs(rows: list[dict]) -> dict[tuple, dict[str, list[float]]]:
    """Finished experiments grouped by arm (the grid's knobs), metrics listed over seeds. Baseline rows
    (the workspace and its commit) are left out, and one run counts once per (arm, seed)."""
    groups: dict[tuple, dict[str, list[float]]] = {}
    for row in rows:
        if row.get("Experiment") is None or row.get("typ") == "baseline":
            continue
        values = {name: _lookup(row, path) for name, path in KEY_METRICS.items()}
        if not isinstance(values["heldout_accuracy"], (int, float)):
            continue  # queued, running or failed
        arm = tuple((k, _plain(_lookup(row, k)) if k in ("probe_count", "delta_layers") else _lookup(row, k))
                    for k in ARM_KEYS)
        bucket = groups.setdefault(arm, {name: [] for name in KEY_METRICS} | {"seed": []})
        seed = _plain(_lookup(row, "seed"))
        if seed in bucket["seed"]:
            continue
        bucket["seed"].append(seed)
        for name, value in values.items():
            if isinstance(value, (int, float)):
                bucket[name].append(float(value))
    return groups


def _plain(value: Any) -> Any:
    """exp_show gives every number as a float; an integer param (probe count, seed, a layer) reads back as
    one, and a list (delta_layers) as a tuple, so that an arm is hashable."""
    if isinstance(value, list):
        return tuple(_plain(v) for v in value)
    return int(value) if isinstance(value, float) and value.is_integer() and not isinstance(value, bool) else value


def comparison_report(rows: list[dict]) -> str:
    """Each arm against the weight-only baseline (lambda_delta = 0, other knobs equal), per metric."""
    groups = group_runs(rows)
    if not groups:
        return "No finished experiments with evaluation metrics.\n"

    def fmt(values: list[float]) -> str:
        if not values:
            return "—"
        mean, ci = mean_ci(values)
        return f"{mean:.3f}" + (f" ± {ci:.3f}" if ci is not None else "")

    def baseline_of(arm: tuple) -> tuple | None:
        """The weight-only arm closest to `arm` (with lambda_delta = 0 the other knobs do not train)."""
        weight_only = [a for a in groups if not dict(a)["lambda_delta"]]
        return max(weight_only, key=lambda a: sum(x == y for x, y in zip(a, arm)), default=None)

    compared = ("heldout_accuracy", "seen_accuracy")

    def difference(values: list[float], base_values: list[float]) -> str:
        if not values or not base_values:
            return "—"
        text = f"{statistics.fmean(values) - statistics.fmean(base_values):+.3f}"
        if len(values) > 1 and len(base_values) > 1:
            se = math.sqrt(statistics.variance(values) / len(values) + statistics.variance(base_values) / len(base_values))
            text += f" ± {1.96 * se:.3f}"
        return text

    header = ["arm", "seeds", *KEY_METRICS, *(f"Δ {m} vs weight-only" for m in compared)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for arm in sorted(groups, key=str):
        bucket = groups[arm]
        base_arm = baseline_of(arm)
        base = groups[base_arm] if base_arm is not None else None
        if base is None:
            diffs = ["no weight-only run"] * len(compared)
        elif base is bucket:
            diffs = ["baseline"] * len(compared)
        else:
            diffs = [difference(bucket[m], base[m]) for m in compared]
        label = ", ".join(f"{k}={v}" for k, v in arm)
        lines.append(f"| {label} | {len(bucket['seed'])} | " + " | ".join(fmt(bucket[m]) for m in KEY_METRICS)
                     + " | " + " | ".join(diffs) + " |")
    notes = ["", "Mean ± 95% confidence half-width over seeds (t distribution); the difference column uses a normal "
             "approximation. Training curves side by side: `dvc plots diff <experiment names>`."]
    return "\n".join(lines + notes) + "\n"


def exp_rows(repo: str = ".") -> list[dict]:
    return dvc.api.exp_show(repo=repo)
