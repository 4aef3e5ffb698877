"""Probe sets: the texts a delta is measured on. Their texts, formatting and max length are part of a
delta's identity: the cache stores them and training reuses exactly those."""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from .config import Config
from .errors import LlgbmError
from .io import sha256_json
from .tasks import Task, generic_texts


@dataclass(frozen=True)
class ProbeSet:
    texts: tuple[str, ...]  # exactly what the tokenizer sees, after the template was applied
    template: str
    max_length: int

    def identity(self) -> dict:
        return {"texts": list(self.texts), "template": self.template, "max_length": self.max_length}

    def fingerprint(self) -> str:
        return sha256_json(self.identity())

    @classmethod
    def from_identity(cls, identity: dict) -> "ProbeSet":
        return cls(tuple(identity["texts"]), identity["template"], identity["max_length"])


def _task_candidates(tasks: list[Task], rng: random.Random) -> list[str]:
    """Train prompts, taken round-robin across tasks so every task is represented early."""
    pools = [rng.sample([r.prompt for r in t.train], len(t.train)) for t in tasks]
    return [pool[i] for i in range(max(map(len, pools))) for pool in pools if i < len(pool)]


def _candidates(probe_type: str, cfg: Config, tasks: list[Task], count: int, rng: random.Random) -> list[str]:
    if probe_type == "generic":
        if cfg.tasks.source != "builtin":
            raise LlgbmError("probes.types: 'generic' probes exist for the built-in tasks only; use 'task'")
        return generic_texts(count, cfg.tasks.sequence_length, cfg.probes.seed)
    if probe_type == "task":
        # Only training tasks: no prompt of a held-out task reaches training, probes included.
        return _task_candidates([t for t in tasks if t.name not in cfg.heldout_tasks], rng)
    raise LlgbmError(f"probes.types: unknown probe type '{probe_type}'")


def apply_template(text: str, template: str, tokenizer: PreTrainedTokenizerBase) -> str:
    if template == "raw":
        return text
    if template == "chat":
        if not getattr(tokenizer, "chat_template", None):
            raise LlgbmError("probes.template: 'chat' needs a tokenizer with a chat template; use 'raw'")
        return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                             add_generation_prompt=True)
    raise LlgbmError(f"probes.template: unknown template '{template}'")


def build_probe_set(cfg: Config, tasks: list[Task], tokenizer: PreTrainedTokenizerBase) -> ProbeSet:
    """`probe_count` probes, interleaving the listed probe types, formatted by the template."""
    rng = random.Random(f"{cfg.probes.seed}:probes")
    pools = [_candidates(t, cfg, tasks, cfg.probe_count, rng) for t in cfg.probes.types]
    interleaved = [pool[i] for i in range(cfg.probe_count) for pool in pools if i < len(pool)]
    if len(interleaved) < cfg.probe_count:
        raise LlgbmError(f"probe_count: {cfg.probe_count} probes asked for, only {len(interleaved)} available")
    texts = [apply_template(t, cfg.probes.template, tokenizer) for t in interleaved[: cfg.probe_count]]
    return ProbeSet(tuple(texts), cfg.probes.template, cfg.probes.max_length)


def tokenize_probes(probes: ProbeSet, tokenizer: PreTrainedTokenizerBase) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded input_ids and attention_mask (P, T); a probe's last real token is at length - 1."""
    if tokenizer.padding_side != "right":
        raise LlgbmError("probes: the tokenizer must pad on the right")
    encoded = tokenizer(list(probes.texts), return_tensors="pt", padding=True, truncation=True,
                        max_length=probes.max_length, add_special_tokens=probes.template == "raw")
    if (encoded["attention_mask"].sum(-1) == 0).any():
        raise LlgbmError("probes: a probe text tokenizes to nothing")
    return encoded["input_ids"], encoded["attention_mask"]
