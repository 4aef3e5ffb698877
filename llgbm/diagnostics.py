"""Diagnostics of the testbed: how much zero-shot headroom exists before any generator runs.

The multi-task LoRA reference (Text-to-LoRA's strongest baseline): one LoRA from the teachers' shared
initialisation, trained on the union of every training task's records, then measured on held-out tasks.
"""
from __future__ import annotations

from pathlib import Path

import torch
from peft import PeftModel, get_peft_model, set_peft_model_state_dict
from transformers import PreTrainedTokenizerBase

from .config import Config
from .data import record_batch
from .errors import LlgbmError
from .evaluate import task_accuracy
from .lora import peft_config, save_peft_model, shared_initialisation
from .models import load_base, load_tokenizer
from .tasks import Task, primitive_tasks


def train_multitask_lora(base_dir: Path, tokenizer: PreTrainedTokenizerBase, tasks: list[Task],
                         init_state: dict[str, torch.Tensor], cfg: Config) -> tuple[PeftModel, list[float]]:
    """One LoRA on the pooled train records of `tasks` (uniform over records; tasks are equally sized in
    the built-in families); returns the model and its loss curve."""
    d = cfg.diagnostics
    model = get_peft_model(load_base(base_dir, cfg.base.dtype), peft_config(cfg.lora))
    set_peft_model_state_dict(model, init_state)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=d.multitask_learning_rate, weight_decay=0.0)
    generator = torch.Generator().manual_seed(cfg.teachers.seed)
    device = next(model.parameters()).device
    records = [r for task in tasks for r in task.train]
    batch = {k: v.to(device) for k, v in record_batch(tokenizer, records).items()}
    losses = []
    model.train()
    for step in range(1, d.multitask_steps + 1):
        rows = torch.randint(0, len(records), (d.multitask_batch_size,), generator=generator).to(device)
        loss = model(**{k: v[rows] for k, v in batch.items()}).loss
        if not torch.isfinite(loss):
            raise LlgbmError(f"diagnostics: multi-task LoRA loss is {loss.item()} at step {step}; "
                             "lower diagnostics.multitask_learning_rate")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    return model, losses


def accuracies(model, tokenizer: PreTrainedTokenizerBase, tasks: list[Task]) -> dict[str, float]:
    return {task.name: task_accuracy(model, tokenizer, task, "test") for task in tasks}


def mean_above_chance(accuracy: dict[str, float], tasks: list[Task]) -> float:
    return sum(accuracy[t.name] - t.chance for t in tasks) / len(tasks)


def split_tasks(cfg: Config, tasks: list[Task]) -> tuple[list[Task], list[Task]]:
    """(training, held-out) tasks; held-out names must be tasks of the tasks file."""
    names = {t.name for t in tasks}
    unknown = [n for n in cfg.heldout_tasks if n not in names]
    if unknown:
        raise LlgbmError(f"heldout_tasks: {unknown} are not tasks of data/tasks.json")
    training = [t for t in tasks if t.name not in cfg.heldout_tasks]
    heldout = [t for t in tasks if t.name in cfg.heldout_tasks]
    if not training or not heldout:
        raise LlgbmError("heldout_tasks: diagnostics need at least one training and one held-out task")
    return training, heldout


def headroom(cfg: Config, tasks: list[Task], base_dir: Path, adapters_dir: Path) -> dict:
    """Base accuracy (on the primitives too, for the compositional family) and the multi-task LoRA
    reference, saved as a PEFT directory and measured through PeftModel.from_pretrained on a fresh base."""
    training, heldout = split_tasks(cfg, tasks)
    tokenizer = load_tokenizer(base_dir)
    base = load_base(base_dir, cfg.base.dtype)
    result: dict = {"chance": {t.name: t.chance for t in heldout},
                    "base": {"heldout": accuracies(base, tokenizer, heldout)}}
    if cfg.tasks.source == "builtin" and cfg.tasks.family == "compositional":
        result["base"]["primitives"] = accuracies(base, tokenizer, primitive_tasks(cfg.tasks, cfg.tasks.test_per_task,
                                                                                   cfg.tasks.seed))
    init_state = shared_initialisation(load_base(base_dir, cfg.base.dtype), cfg.lora, cfg.teachers.seed)
    model, losses = train_multitask_lora(base_dir, tokenizer, training, init_state, cfg)
    save_peft_model(model, adapters_dir / "multitask")
    loaded = PeftModel.from_pretrained(load_base(base_dir, cfg.base.dtype), str(adapters_dir / "multitask")).eval()
    result["multitask"] = {"heldout": accuracies(loaded, tokenizer, heldout),
                           "seen": accuracies(loaded, tokenizer, training),
                           "loss_first": losses[0], "loss_final": sum(losses[-10:]) / len(losses[-10:])}
    return result


def headroom_summary(result: dict, tasks: list[Task], cfg: Config) -> dict:
    """The numbers a reader needs first: mean held-out accuracy and its distance above chance."""
    training, heldout = split_tasks(cfg, tasks)
    summary = {
        "heldout_chance_mean": sum(t.chance for t in heldout) / len(heldout),
        "base_heldout_accuracy_mean": sum(result["base"]["heldout"].values()) / len(heldout),
        "base_heldout_max_distance_from_chance": max(abs(result["base"]["heldout"][t.name] - t.chance) for t in heldout),
        "multitask_heldout_accuracy_mean": sum(result["multitask"]["heldout"].values()) / len(heldout),
        "multitask_heldout_above_chance": mean_above_chance(result["multitask"]["heldout"], heldout),
        "multitask_seen_accuracy_mean": sum(result["multitask"]["seen"].values()) / len(training),
    }
    primitives = result["base"].get("primitives")
    if primitives:
        for kind in ("selector", "transform"):
            values = [v for k, v in primitives.items() if k.startswith(kind + ":")]
            summary[f"base_{kind}_primitive_accuracy_mean"] = sum(values) / len(values)
    return summary
