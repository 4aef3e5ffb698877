"""Fixtures of random models, adapters, probes and records, and the reference paths a PEFT user takes: what
the tests and the bench check the project's batched paths against. Nothing here reads files of the
pipeline or the config (a section's values are passed in)."""
from __future__ import annotations

import copy
from pathlib import Path

import torch
from peft import get_peft_model, set_peft_model_state_dict
from transformers import PreTrainedModel, Qwen2Config, Qwen2ForCausalLM

from llgbm.artifacts.adapters import load_peft_model, peft_config, to_peft_state_dict
from llgbm.artifacts.base_model import load_base
from llgbm.core.delta import DeltaSpec, probe_states, reduce_delta
from llgbm.core.lora import LoraConfig, LoraSlot


def tiny_shape(tiny) -> dict:
    """The embedded default's base-model shape from params' `base.tiny` section (vocabulary size does not
    matter for timing or for the unit tests' exact cases)."""
    return dict(vocab_size=32, hidden_size=tiny.hidden_size, intermediate_size=tiny.intermediate_size,
                num_hidden_layers=tiny.num_layers, num_attention_heads=tiny.num_heads,
                num_key_value_heads=tiny.num_kv_heads, tie_word_embeddings=True)


def random_model(shape: dict, seed: int = 0) -> PreTrainedModel:
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(Qwen2Config(**shape)).eval()
    model.requires_grad_(False)
    return model


def random_adapter(layout: list[LoraSlot], generator: torch.Generator) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {s.name: (torch.randn(s.a_shape, generator=generator) * 0.05, torch.randn(s.b_shape, generator=generator) * 0.05)
            for s in layout}


def random_records(vocab: int, count: int, length: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Right-padded records of unequal length (as random_probes) whose last two real tokens are the answer:
    input_ids, attention_mask and labels (-100 outside the answer), each (count, length)."""
    ids, mask = random_probes(vocab, count, length, generator)
    lengths = mask.sum(-1, keepdim=True)
    positions = torch.arange(length)
    labels = torch.where((positions >= lengths - 2) & mask.bool(), ids, torch.full_like(ids, -100))
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def random_probes(vocab: int, count: int, length: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded probes of unequal length (the shortest is 3/4 of the longest), as real probes are."""
    ids = torch.randint(3, vocab, (count, length), generator=generator)
    lengths = torch.linspace(length, max(1, (3 * length) // 4), count).round().long()
    mask = (torch.arange(length)[None] < lengths[:, None]).long()
    return ids * mask, mask


def in_memory_peft_delta(base: PreTrainedModel, adapter: dict, layout: list[LoraSlot], lora: LoraConfig,
                         ids: torch.Tensor, mask: torch.Tensor, base_states: torch.Tensor) -> torch.Tensor:
    """The naive reference without disk: a PEFT model on its own copy of the base per adapter, forward only."""
    model = get_peft_model(copy.deepcopy(base), peft_config(lora))
    set_peft_model_state_dict(model, to_peft_state_dict(adapter, layout))
    return reduce_delta(probe_states(model, ids, mask)[None], base_states, DeltaSpec())[0]


def peft_delta(base_dir: Path, adapter_dir: Path, probe_ids: torch.Tensor, probe_mask: torch.Tensor,
               spec: DeltaSpec = DeltaSpec(), dtype: str = "float32") -> torch.Tensor:
    """delta(base + adapter, base) the way a PEFT user would get it: two fresh bases, one with the adapter
    loaded by `PeftModel.from_pretrained`."""
    base = probe_states(load_base(base_dir, dtype), probe_ids, probe_mask, spec.layers)
    adapted = probe_states(load_peft_model(load_base(base_dir, dtype), adapter_dir), probe_ids, probe_mask, spec.layers)
    return reduce_delta(adapted[None], base, spec)[0]
