"""What an arm of the study is: the knobs that make one and the study's objectives; and how an arm is named
in the report and the plot, which weight-only arm it is compared with, and where its row goes."""
from __future__ import annotations

from collections import Counter
from typing import Any, Mapping

# The knobs an arm is made of: top-level params, and nested ones by their dotted path (as exp_show and `-S`
# both name them).
ARM_KEYS = ("lambda_delta", "delta_loss_type", "probe_count", "lambda_schedule", "delta_reduce", "delta_layers",
            "loss_balance", "behaviour_loss", "max_training_tasks", "train.lambda_weights", "train.behaviour_adapters",
            "generator.kind", "generator.condition", "generator.max_scale_factor",
            # The generator's hyperparameters, chosen on validation tasks (`llgbm select`): arms of one key, so
            # that runs differing only in them are ranked against each other. Runs archived before they joined
            # (the second edition's, issue 34's validation runs) lack them (None) and keep their recorded keys.
            "train.weight_decay", "train.steps", "train.learning_rate", "train.lambda_weights_decay_steps",
            "sft.records", "generator.hidden_dim", "generator.depth", "generator.prompts_per_sample")
# Knobs renamed since runs were made (issue 33), old name -> new: runs in the archive and older experiments'
# exp_show rows carry the old name, read as the new one (llgbm.study.run_archive, llgbm.study.experiments).
RENAMED_KNOBS = {"train.delta_batch_size": "train.behaviour_adapters"}

# The study's objectives: every knob that defines each spelled out (the rest at params.yaml's values), so an
# arm means the same whatever params.yaml's default objective is. Training on the behaviour term alone
# (train.lambda_weights = 0) needs the plain sum: grad_norm balancing scales the behaviour term by the weight
# term's gradient norm, which is then zero (the config rejects the pair). Beside the weight term the delta
# and KL run on 2 adapters per batch, the task loss on every item of it (8), as the second edition ran them.
_WITH_WEIGHTS = {"train.lambda_weights": 1.0, "loss_balance": "grad_norm", "train.behaviour_adapters": 2,
                 "behaviour_loss": "delta", "delta_reduce": "mean", "delta_layers": "last", "generator.condition": "prompts"}
_ONLY = {"train.lambda_weights": 0.0, "loss_balance": "none"}
OBJECTIVES: dict[str, dict[str, Any]] = {
    "weight-only": {**_WITH_WEIGHTS, "lambda_delta": 0.0},
    "delta": dict(_WITH_WEIGHTS),
    "per-probe delta": {**_WITH_WEIGHTS, "delta_reduce": "per_probe"},
    "multi-layer delta": {**_WITH_WEIGHTS, "delta_layers": "all"},
    "KL": {**_WITH_WEIGHTS, "behaviour_loss": "kl"},
    "delta-only": {**_WITH_WEIGHTS, **_ONLY},
    "KL-only": {**_WITH_WEIGHTS, "behaviour_loss": "kl", **_ONLY},
    # The task loss (Text-to-LoRA's SFT) on every item of the batch, and the same without the prompts: the
    # reference that tells conditioning from averaging (a constant condition makes it one adapter).
    "SFT": {**_WITH_WEIGHTS, "behaviour_loss": "sft", "train.behaviour_adapters": 8},
    "SFT-only": {**_WITH_WEIGHTS, "behaviour_loss": "sft", "train.behaviour_adapters": 8, **_ONLY},
    "SFT-only, prompt-blind": {**_WITH_WEIGHTS, "behaviour_loss": "sft", "train.behaviour_adapters": 8, **_ONLY,
                               "generator.condition": "constant"},
}

# Contrasts between objectives, first minus second, that the study's answer needs beside the comparisons with
# weight-only: does the probe delta carry anything the task loss does not (SFT - delta), does weight
# matching add to the task loss (SFT - SFT-only), do the delta's variants and KL differ from it, and (without
# the weight term, where the task loss alone gains most) does the probe delta alone reach it (delta-only - SFT-only).
CONTRASTS: tuple[tuple[str, str], ...] = (("SFT", "delta"), ("SFT", "SFT-only"), ("multi-layer delta", "delta"),
                                          ("KL", "delta"), ("delta-only", "SFT-only"))

# An arm as read back (llgbm.study.experiments.arm_of): (knob, value) pairs in ARM_KEYS' order, hashable.
Arm = tuple[tuple[str, Any], ...]


def objective_of(arm: Mapping[str, Any]) -> str:
    """An arm's objective in words: weight-only, delta (with its variants), KL, SFT, their "-only" forms, and
    ", prompt-blind" where the generator's condition is constant."""
    blind = ", prompt-blind" if arm.get("generator.condition") == "constant" else ""
    if not arm.get("lambda_delta"):
        return "weight-only" + blind
    only = "-only" if arm.get("train.lambda_weights") == 0 else ""
    if arm.get("behaviour_loss") in ("kl", "sft"):
        return {"kl": "KL", "sft": "SFT"}[arm["behaviour_loss"]] + only + blind
    words = ["per-probe"] if arm.get("delta_reduce") == "per_probe" else []
    layers = arm.get("delta_layers")
    if layers == "all":
        words.append("multi-layer")
    name = " ".join(words + [f"delta{only}"])
    if layers not in (None, "last", "all"):
        name += " at layers " + ", ".join(str(layer) for layer in layers)
    return name + blind


# Knobs the objective's name says (or, for the task count, a column of its own).
_NAMED_KNOBS = ("behaviour_loss", "delta_reduce", "delta_layers", "max_training_tasks", "generator.condition")


def arm_knobs(arms: list[Arm]) -> dict[Arm, str]:
    """Per arm, the knobs its name does not say that differ from the most common value among `arms`. A knob
    of None is one the run did not record (it predates the knob: no knob it shows takes null)."""
    common = {key: Counter(dict(a)[key] for a in arms).most_common(1)[0][0] for key in ARM_KEYS} if arms else {}
    knobs = {}
    for arm in arms:
        values = dict(arm)
        objective = objective_of(values)
        implied = set(_NAMED_KNOBS)
        if objective == "weight-only":
            implied.add("lambda_delta")
        if objective.startswith("SFT"):
            implied.add("train.behaviour_adapters")
        if "-only" in objective:
            implied |= {"train.lambda_weights", "loss_balance"}
        knobs[arm] = ", ".join(_knob_text(k, v) for k, v in arm if k not in implied and v != common[k])
    return knobs


def _knob_text(key: str, value: Any) -> str:
    return f"{key} not recorded" if value is None else f"{key}={_text(value)}"


def _text(value: Any) -> str:
    return "[" + ", ".join(str(v) for v in value) + "]" if isinstance(value, tuple) else str(value)


def closest_arm(arm: Arm, objective: str, arms: list[Arm]) -> Arm | None:
    """The arm of `objective` with the same max_training_tasks as `arm` and otherwise the most knobs equal to
    its (ties: the first by its text), or None."""
    task_count = dict(arm)["max_training_tasks"]
    candidates = sorted((a for a in arms if objective_of(dict(a)) == objective
                         and dict(a)["max_training_tasks"] == task_count), key=str)
    return max(candidates, key=lambda a: sum(x == y for x, y in zip(a, arm)), default=None)


def reference_of(arm: Arm, arms: list[Arm]) -> Arm | None:
    """The weight-only arm closest to `arm` (with lambda_delta = 0 the behaviour knobs do not train)."""
    return closest_arm(arm, "weight-only", arms)


def prompt_blind_of(arm: Arm, arms: list[Arm]) -> Arm | None:
    """The arm that differs from a prompt-conditioned `arm` only in a constant condition, if it ran: the
    same generator and objective without the prompts (does conditioning help at all?)."""
    if dict(arm).get("generator.condition") != "prompts":
        return None
    blind = tuple((k, "constant" if k == "generator.condition" else v) for k, v in arm)
    return blind if blind in arms else None


def arm_order(arm: Arm) -> tuple:
    """Rows by training-task count (all last), then objective in the study's order, then knobs."""
    values = dict(arm)
    count = values["max_training_tasks"]
    objective = objective_of(values)
    rank = list(OBJECTIVES).index(objective) if objective in OBJECTIVES else len(OBJECTIVES)
    return (count is None, count or 0, rank, objective, str(arm))
