"""Task accuracy: multiple choice over a task's options by the log-likelihood of each completion.

Shared by the teachers stage (its bar), evaluation and the diagnostics; it knows nothing of either."""
from __future__ import annotations

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .data import completion_batch
from .tasks import Task


@torch.no_grad()
def completion_log_likelihoods(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                               pairs: list[tuple[str, str]], batch_size: int = 512) -> torch.Tensor:
    """Summed log-probability of each completion given its prompt."""
    scores = []
    device = next(model.parameters()).device
    for start in range(0, len(pairs), batch_size):
        batch = {k: v.to(device) for k, v in completion_batch(tokenizer, pairs[start : start + batch_size]).items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
        log_probs = torch.log_softmax(logits[:, :-1], dim=-1)
        targets = batch["labels"][:, 1:]
        picked = log_probs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        scores.append((picked * (targets != -100)).sum(-1).cpu())
    return torch.cat(scores)


def task_accuracy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, task: Task, split: str = "test") -> float:
    """Share of the split's records whose response has the highest likelihood among the task's options."""
    records = getattr(task, split)
    pairs = [(r.prompt, option) for r in records for option in task.options]
    scores = completion_log_likelihoods(model, tokenizer, pairs).view(len(records), len(task.options))
    gold = torch.tensor([task.options.index(r.response) for r in records])
    return (scores.argmax(-1) == gold).float().mean().item()
