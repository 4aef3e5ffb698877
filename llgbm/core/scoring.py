"""Completions of prompts: their token batches, their log-likelihoods, and task accuracy as multiple
choice over a task's options by the log-likelihood of each completion.

Shared by the teachers stage (its bar), evaluation and the diagnostics; it knows nothing of either."""
from __future__ import annotations

from typing import Protocol, Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase


class Example(Protocol):
    prompt: str
    response: str


class ScoredTask(Protocol):
    """What scoring needs of a task (data.tasks.Task is one): its options and its records."""
    options: tuple[str, ...]
    train: Sequence[Example]
    test: Sequence[Example]


def completion_token_ids(tokenizer: PreTrainedTokenizerBase, completion: str) -> list[int]:
    """A completion's token ids as they follow a prompt (tokenised on their own, after a space); none for
    an empty completion."""
    return tokenizer(" " + completion, add_special_tokens=False)["input_ids"] if completion else []


def encode_completion(tokenizer: PreTrainedTokenizerBase, prompt: str, completion: str) -> tuple[list[int], int]:
    """Token ids of prompt + completion, and how many of them belong to the prompt."""
    prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    return prompt_ids + completion_token_ids(tokenizer, completion), len(prompt_ids)


def completion_batch(tokenizer: PreTrainedTokenizerBase, pairs: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
    """Right-padded input_ids and attention_mask, and labels that score only the completion tokens."""
    encoded = [encode_completion(tokenizer, p, c) for p, c in pairs]
    width = max(len(ids) for ids, _ in encoded)
    input_ids = torch.full((len(encoded), width), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(encoded), width), dtype=torch.long)
    labels = torch.full((len(encoded), width), -100, dtype=torch.long)
    for row, (ids, n_prompt) in enumerate(encoded):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
        labels[row, n_prompt : len(ids)] = torch.tensor(ids[n_prompt:])
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}



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


@torch.no_grad()
def next_token_log_probs(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str],
                         batch_size: int = 512) -> torch.Tensor:
    """log p(next token | prompt) at each prompt's last token, (len(prompts), vocab); prompts tokenised
    as `encode_completion` tokenises them."""
    out = []
    device = next(model.parameters()).device
    for start in range(0, len(prompts), batch_size):
        batch = {k: v.to(device) for k, v in completion_batch(tokenizer, [(p, "") for p in prompts[start : start + batch_size]]).items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
        last = batch["attention_mask"].sum(-1) - 1
        out.append(torch.log_softmax(logits[torch.arange(len(last)), last], dim=-1).cpu())
    return torch.cat(out)


def option_scores(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str],
                  options: tuple[str, ...]) -> torch.Tensor:
    """Summed log-probability of every option as the completion of every prompt, (prompts, options).
    When every option is one token (the built-in tasks' answers), its log-likelihood is the next-token
    log-probability after the prompt, so one forward per prompt replaces one per (prompt, option)."""
    option_ids = [completion_token_ids(tokenizer, option) for option in options]
    if all(len(ids) == 1 for ids in option_ids):
        return next_token_log_probs(model, tokenizer, prompts)[:, [ids[0] for ids in option_ids]]
    pairs = [(p, option) for p in prompts for option in options]
    return completion_log_likelihoods(model, tokenizer, pairs).view(len(prompts), len(options))


def task_accuracy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, task: ScoredTask, split: str = "test") -> float:
    """Share of the split's records whose response has the highest likelihood among the task's options."""
    records = getattr(task, split)
    scores = option_scores(model, tokenizer, [r.prompt for r in records], task.options)
    gold = torch.tensor([task.options.index(r.response) for r in records])
    return (scores.argmax(-1) == gold).float().mean().item()
