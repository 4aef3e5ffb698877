"""Completions of prompts: their token batches, their log-likelihoods, and task accuracy as multiple
choice over a task's options by the log-likelihood of each completion.

Shared by the teachers stage (its bar), evaluation and the diagnostics; it knows nothing of either."""
from __future__ import annotations

from typing import Callable, Protocol, Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from llgbm.core.lora import AdapterBatch, LoraSlot, apply_adapters


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



def _completion_scores(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed log-probability of each row's labelled (completion) tokens, (rows,)."""
    log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    targets = labels[:, 1:]
    picked = log_probs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * (targets != -100)).sum(-1)


def _last_token_log_probs(logits: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """log p(next token) after each right-padded row's last real token, (rows, vocab)."""
    last = attention_mask.sum(-1) - 1
    return torch.log_softmax(logits[torch.arange(len(last), device=logits.device), last].float(), dim=-1)


Forward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (input_ids, attention_mask) -> logits


def _model_forward(model: PreTrainedModel) -> Forward:
    return lambda ids, mask: model(input_ids=ids, attention_mask=mask).logits


@torch.no_grad()
def completion_log_likelihoods(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                               pairs: list[tuple[str, str]], batch_size: int = 512) -> torch.Tensor:
    """Summed log-probability of each completion given its prompt."""
    device = next(model.parameters()).device
    scores = []
    for start in range(0, len(pairs), batch_size):
        batch = {k: v.to(device) for k, v in completion_batch(tokenizer, pairs[start : start + batch_size]).items()}
        scores.append(_completion_scores(_model_forward(model)(batch["input_ids"], batch["attention_mask"]),
                                         batch["labels"]).cpu())
    return torch.cat(scores)


@torch.no_grad()
def next_token_log_probs(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str],
                         batch_size: int = 512) -> torch.Tensor:
    """log p(next token | prompt) at each prompt's last token, (len(prompts), vocab); prompts tokenised
    as `encode_completion` tokenises them."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(prompts), batch_size):
        batch = {k: v.to(device) for k, v in completion_batch(tokenizer, [(p, "") for p in prompts[start : start + batch_size]]).items()}
        out.append(_last_token_log_probs(_model_forward(model)(batch["input_ids"], batch["attention_mask"]),
                                         batch["attention_mask"]).cpu())
    return torch.cat(out)


@torch.no_grad()
def replicated_option_scores(forward: Forward, copies: int, tokenizer: PreTrainedTokenizerBase, prompts: list[str],
                             options: tuple[str, ...], device: torch.device, rows_per_forward: int = 512) -> torch.Tensor:
    """(copies, prompts, options): summed log-probability of every option after every prompt, where each
    forward holds `copies` consecutive blocks of the same rows (block j: the j-th adapter of a batch, see
    core.lora.apply_adapters), about `rows_per_forward` rows in all. One-token options (the built-in
    answers) are read off the next-token distribution after the prompt: one row per prompt rather than one
    per (prompt, option)."""
    option_ids = [completion_token_ids(tokenizer, option) for option in options]
    single = all(len(ids) == 1 for ids in option_ids)
    step = max(1, rows_per_forward // (copies * (1 if single else len(options))))
    chunks = []
    for start in range(0, len(prompts), step):
        part = prompts[start : start + step]
        pairs = [(p, "") for p in part] if single else [(p, option) for p in part for option in options]
        batch = {k: v.repeat(copies, 1).to(device) for k, v in completion_batch(tokenizer, pairs).items()}
        logits = forward(batch["input_ids"], batch["attention_mask"])
        if single:
            scores = _last_token_log_probs(logits, batch["attention_mask"])[:, [ids[0] for ids in option_ids]]
        else:
            scores = _completion_scores(logits, batch["labels"])
        chunks.append(scores.reshape(copies, len(part), len(options)).cpu())
    return torch.cat(chunks, dim=1)


def option_scores(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str],
                  options: tuple[str, ...]) -> torch.Tensor:
    """Summed log-probability of every option as the completion of every prompt, (prompts, options)."""
    device = next(model.parameters()).device
    return replicated_option_scores(_model_forward(model), 1, tokenizer, prompts, options, device)[0]


def accuracy_of_scores(scores: torch.Tensor, task: ScoredTask, split: str = "test") -> torch.Tensor:
    """(..., records, options) scores -> (...,) the share of the split's records whose response scores
    highest among the task's options."""
    gold = torch.tensor([task.options.index(r.response) for r in getattr(task, split)])
    return (scores.argmax(-1) == gold).float().mean(-1)


def task_accuracy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, task: ScoredTask, split: str = "test") -> float:
    """Share of the split's records whose response has the highest likelihood among the task's options."""
    records = getattr(task, split)
    return accuracy_of_scores(option_scores(model, tokenizer, [r.prompt for r in records], task.options),
                              task, split).item()


def adapted_task_accuracies(model: PreTrainedModel, layout: list[LoraSlot], adapters: AdapterBatch, scaling: float,
                            tokenizer: PreTrainedTokenizerBase, task: ScoredTask, split: str = "test") -> torch.Tensor:
    """(adapters,): task_accuracy of each adapter of the batch applied to the frozen `model`, every adapter
    on its own rows of one forward (core.lora.apply_adapters), no PEFT model built."""
    records = getattr(task, split)
    copies = next(iter(adapters.values()))[0].shape[0]

    def forward(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        with apply_adapters(model, layout, adapters, scaling):
            return model(input_ids=ids, attention_mask=mask).logits

    device = next(model.parameters()).device
    scores = replicated_option_scores(forward, copies, tokenizer, [r.prompt for r in records], task.options, device)
    return accuracy_of_scores(scores, task, split)
