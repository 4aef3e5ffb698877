"""Teacher LoRAs: one PEFT training trajectory per task, from one shared initialisation, whose last
K snapshots are the task's checkpoints (as DnD collects them)."""
from __future__ import annotations

from pathlib import Path

import torch
from peft import get_peft_model, set_peft_model_state_dict
from transformers import PreTrainedTokenizerBase

from .config import Config
from .data import record_batch
from .errors import LlgbmError
from .scoring import task_accuracy
from .io import write_json_atomic
from .lora import peft_config, save_peft_model, shared_initialisation
from .models import load_base, load_tokenizer
from .tasks import Task


def snapshot_steps(steps: int, count: int, interval: int) -> list[int]:
    return [steps - interval * i for i in reversed(range(count))]


def train_teacher(base_dir: Path, tokenizer: PreTrainedTokenizerBase, task: Task, init_state: dict[str, torch.Tensor],
                  cfg: Config, out_dir: Path, task_index: int) -> list[dict]:
    """Train one task's LoRA and save its snapshots under out_dir/step-NNNNN; returns their metrics."""
    t = cfg.teachers
    model = get_peft_model(load_base(base_dir, cfg.base.dtype), peft_config(cfg.lora))
    set_peft_model_state_dict(model, init_state)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=t.learning_rate, weight_decay=0.0)
    generator = torch.Generator().manual_seed(cfg.teachers.seed * 1000 + task_index)
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in record_batch(tokenizer, list(task.train)).items()}
    snapshots = set(snapshot_steps(t.steps, t.checkpoints_per_task, t.checkpoint_interval))
    train_prompts = [r.prompt for r in task.train]
    results = []
    for step in range(1, t.steps + 1):
        model.train()
        rows = torch.randint(0, len(task.train), (t.batch_size,), generator=generator).to(device)
        loss = model(**{k: v[rows] for k, v in batch.items()}).loss
        if not torch.isfinite(loss):
            raise LlgbmError(f"teachers: loss of task '{task.name}' is {loss.item()} at step {step}; lower teachers.learning_rate")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step in snapshots:
            model.eval()
            checkpoint = out_dir / f"step-{step:05d}"
            save_peft_model(model, checkpoint)
            metrics = {"task": task.name, "step": step, "train_loss": loss.item(),
                       "test_accuracy": task_accuracy(model, tokenizer, task, "test")}
            write_json_atomic(checkpoint / "prompts.json", train_prompts)
            write_json_atomic(checkpoint / "metrics.json", metrics)
            results.append({**metrics, "path": str(checkpoint)})
    return results


def check_bar(summary: dict, min_accuracy: float) -> None:
    worst = min(summary["tasks"].items(), key=lambda kv: kv[1]["teacher_accuracy_min"])
    if worst[1]["teacher_accuracy_min"] < min_accuracy:
        raise LlgbmError(
            f"teachers: task '{worst[0]}' has a checkpoint at held-out accuracy "
            f"{worst[1]['teacher_accuracy_min']:.3f} < teachers.min_accuracy {min_accuracy}")


def summarise(per_task: dict[str, dict]) -> dict:
    return {
        "tasks": per_task,
        "teacher_accuracy_min": min(v["teacher_accuracy_min"] for v in per_task.values()),
        "base_accuracy_max_above_chance": max(v["base_accuracy"] - v["chance"] for v in per_task.values()),
        "base_accuracy_max_distance_from_chance": max(abs(v["base_accuracy"] - v["chance"]) for v in per_task.values()),
    }


def train_all_teachers(base_dir: Path, tasks: list[Task], cfg: Config, out_dir: Path) -> dict:
    """Shared init, base accuracy and teacher trajectories for every task; writes index.json in out_dir
    and returns the metrics summary. Fails (before anything is kept) if a teacher misses the bar."""
    tokenizer = load_tokenizer(base_dir)
    init_state = shared_initialisation(load_base(base_dir, cfg.base.dtype), cfg.lora, cfg.teachers.seed)
    init_model = get_peft_model(load_base(base_dir, cfg.base.dtype), peft_config(cfg.lora))
    set_peft_model_state_dict(init_model, init_state)
    save_peft_model(init_model, out_dir / "init")
    per_task, index = {}, []
    for task_index, task in enumerate(tasks):
        base_accuracy = task_accuracy(load_base(base_dir, cfg.base.dtype), tokenizer, task, "test")
        checkpoints = train_teacher(base_dir, tokenizer, task, init_state, cfg, out_dir / task.name, task_index)
        for c in checkpoints:
            index.append({**c, "path": str(Path(c["path"]).relative_to(out_dir))})
        accuracies = [c["test_accuracy"] for c in checkpoints]
        per_task[task.name] = {"base_accuracy": base_accuracy, "chance": task.chance,
                               "teacher_accuracy_min": min(accuracies), "teacher_accuracy_final": accuracies[-1]}
        print(f"{task.name:>12}: base {base_accuracy:.3f} (chance {task.chance:.3f}), "
              f"teacher checkpoints {', '.join(f'{a:.3f}' for a in accuracies)}", flush=True)
    write_json_atomic(out_dir / "index.json", {"checkpoints": index})
    summary = summarise(per_task)
    check_bar(summary, cfg.teachers.min_accuracy)
    return summary
