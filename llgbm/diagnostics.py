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
from .lora import peft_config
from .models import load_base
from .tasks import Task


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
