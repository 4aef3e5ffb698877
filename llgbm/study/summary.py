"""`llgbm summary`: the handful of numbers a reader looks at first, from the stages' metrics files, instead
of `dvc metrics show`'s hundreds of columns."""
from __future__ import annotations

import json
from pathlib import Path

from llgbm.infra.errors import LlgbmError

# (metrics file under results/, dotted key, what it is)
SUMMARY_ROWS = (
    ("teachers", "teacher_accuracy_min", "teachers: weakest checkpoint, own task's test records"),
    ("diagnostics", "base_heldout_accuracy_mean", "held-out: base model"),
    ("diagnostics", "heldout_chance_mean", "held-out: chance"),
    ("diagnostics", "multitask_heldout_accuracy_mean", "held-out: multi-task LoRA (diagnostics)"),
    ("diagnostics", "multitask_seen_accuracy_mean", "seen: multi-task LoRA (diagnostics)"),
    ("evaluate", "heldout.accuracy.generated", "held-out: generated adapters"),
    ("evaluate", "heldout.below_chance.generated", "held-out: tasks whose generated adapters are below chance"),
    ("evaluate", "validation.accuracy.generated", "validation: generated adapters (with validation_tasks)"),
    ("evaluate", "heldout.accuracy.teacher", "held-out: each task's own teacher"),
    ("evaluate", "heldout.accuracy.factor_mean_teacher", "held-out: mean of the training teachers' A and B"),
    ("evaluate", "heldout.accuracy.nearest_teacher", "held-out: nearest training teacher"),
    ("evaluate", "seen.accuracy.generated", "seen: generated adapters"),
    ("evaluate", "heldout.gain_share.generated", "held-out: generated gain share (teacher = 1)"),
    ("train", "loss_weights", "train: last step's L_weights"),
    ("train", "loss_behaviour", "train: last step's behavioural term"),
    ("train", "weight_norm_ratio", "train: generated / teacher weight norm"),
)


# The references a generator has to beat with one adapter for every held-out task (no use of its prompts):
# the row after the generated adapters' held-out figure names the best of them.
ONE_ADAPTER_REFERENCES = (
    ("diagnostics", "base_heldout_accuracy_mean", "base model"),
    ("diagnostics", "multitask_heldout_accuracy_mean", "multi-task LoRA"),
    ("diagnostics", "update_mean_teacher_heldout_accuracy_mean", "mean update of the training teachers"),
    ("evaluate", "heldout.accuracy.factor_mean_teacher", "mean of the training teachers' A and B"),
)


def best_one_adapter_reference(loaded: dict[str, dict]) -> tuple[float, str] | None:
    """(accuracy, name) of the best ONE_ADAPTER_REFERENCES figure on the held-out tasks, None if none ran."""
    figures = [(value, name) for stage, key, name in ONE_ADAPTER_REFERENCES
               if isinstance(value := _lookup(loaded.get(stage, {}), key), (int, float))]
    return max(figures) if figures else None


def _lookup(metrics: dict, dotted: str) -> object:
    value: object = metrics
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def summary(repo: Path) -> str:
    """A markdown table of SUMMARY_ROWS from repo/results/<stage>/metrics.json ("—" where a stage has not
    run or a metric is undefined)."""
    loaded: dict[str, dict] = {}
    for stage in dict.fromkeys(stage for stage, _, _ in SUMMARY_ROWS):
        path = Path(repo) / "results" / stage / "metrics.json"
        try:
            loaded[stage] = json.loads(path.read_text()) if path.is_file() else {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise LlgbmError(f"{path}: not a metrics file (not JSON)") from None
    if not any(loaded.values()):
        raise LlgbmError(f"{Path(repo) / 'results'}: no stage's metrics.json; run dvc repro first")
    lines = ["| metric | value | from |", "|---|---|---|"]
    for stage, key, label in SUMMARY_ROWS:
        value = _lookup(loaded[stage], key)
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        cell = "—" if not number else str(value) if ".below_chance." in key else f"{value:.3f}"  # counts as counts
        lines.append(f"| {label} | {cell} | results/{stage}/metrics.json: {key} |")
        if key == "heldout.accuracy.generated":
            best = best_one_adapter_reference(loaded)
            lines.append(f"| held-out: best one-adapter reference{f' ({best[1]})' if best else ''} | "
                         f"{f'{best[0]:.3f}' if best else '—'} | the best of {len(ONE_ADAPTER_REFERENCES)} references |")
    return "\n".join(lines)
