"""The LoRA layout and the batched LoRA forward (PEFT's layer math, without PEFT).

For a base model config and a LoRA config there is one ordered list of slots (layer, module, A shape,
B shape); the weight tokens, the batched delta and the PEFT export all derive from it. B adapters are
applied in one forward of a frozen base: forward hooks on the target linears add scaling * x A_j^T B_j^T
for the rows of adapter j (two batched matmuls; no dense delta-W, no PEFT injection into the base);
projections that share an input (q/k/v, gate/up) share one matmul for their A products.
"""
from __future__ import annotations

import contextlib
import functools
import re
from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.utils.checkpoint
from transformers import AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

from llgbm.infra.errors import LlgbmError

LORA_TARGETS_DEFAULT = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_LAYER = re.compile(r"\.layers\.(\d+)\.")


@dataclass
class LoraConfig:
    """The LoRA every adapter of a run shares (params.yaml `lora`)."""
    rank: int = 4
    alpha: float = 8.0
    target_modules: list[str] = field(default_factory=lambda: list(LORA_TARGETS_DEFAULT))


@dataclass(frozen=True)
class LoraSlot:
    name: str  # module path in the causal LM, e.g. "model.layers.0.self_attn.q_proj"
    block: str  # its decoder layer, e.g. "model.layers.0"
    layer: int
    module: str  # e.g. "self_attn.q_proj"
    in_features: int
    out_features: int
    rank: int

    @property
    def a_shape(self) -> tuple[int, int]:
        return (self.rank, self.in_features)

    @property
    def b_shape(self) -> tuple[int, int]:
        return (self.out_features, self.rank)

    @property
    def peft_a_key(self) -> str:
        return f"base_model.model.{self.name}.lora_A.weight"

    @property
    def peft_b_key(self) -> str:
        return f"base_model.model.{self.name}.lora_B.weight"


def lora_layout(model_config: PretrainedConfig, lora: LoraConfig) -> list[LoraSlot]:
    """Slots in module order, read off the model built on the meta device (no weights needed)."""
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_config)
    slots = layout_of_model(model, lora)
    del model
    return slots


def layout_of_model(model: PreTrainedModel, lora: LoraConfig) -> list[LoraSlot]:
    slots = []
    found = set()
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if leaf not in lora.target_modules or not isinstance(module, torch.nn.Linear):
            continue
        match = _LAYER.search(name)
        if match is None:
            continue
        found.add(leaf)
        slots.append(LoraSlot(
            name=name, block=name[: match.end() - 1], layer=int(match.group(1)), module=name[match.end():],
            in_features=module.in_features, out_features=module.out_features, rank=lora.rank,
        ))
    missing = [m for m in lora.target_modules if m not in found]
    if missing:
        raise LlgbmError(f"lora.target_modules: {missing} match no linear layer of the base model")
    return slots


def lora_scaling(lora: LoraConfig) -> float:
    return lora.alpha / lora.rank



# {slot name: (A of shape (B, r, in), B of shape (B, out, r))}
AdapterBatch = dict[str, tuple[torch.Tensor, torch.Tensor]]


def stack_adapters(adapters: list[dict[str, tuple[torch.Tensor, torch.Tensor]]]) -> AdapterBatch:
    names = adapters[0].keys()
    return {n: (torch.stack([a[n][0] for a in adapters]), torch.stack([a[n][1] for a in adapters])) for n in names}


def lora_down(x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """x A_j^T for the rows of adapter j: x (B * P, T, in) adapter-major, a (B, r, in) -> (B, P * T, r)."""
    n_adapters = a.shape[0]
    rows, length, width = x.shape
    grouped = x.reshape(n_adapters, (rows // n_adapters) * length, width)
    return torch.bmm(grouped, a.transpose(1, 2).to(grouped.dtype))


def lora_up(base_out: torch.Tensor, low_rank: torch.Tensor, b: torch.Tensor, scaling: float) -> torch.Tensor:
    """base_out + scaling * low_rank B_j^T: base_out (B * P, T, out), low_rank (B, P * T, r), b (B, out, r)."""
    out = base_out.reshape(low_rank.shape[0], low_rank.shape[1], -1)
    # One fused kernel for the second matmul, the scaling and the residual add.
    return torch.baddbmm(out, low_rank.to(out.dtype), b.transpose(1, 2).to(out.dtype), alpha=scaling).reshape(base_out.shape)


def batched_lora_forward(x: torch.Tensor, base_out: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                         scaling: float) -> torch.Tensor:
    """base_out + scaling * x A_j^T B_j^T for the rows of adapter j.

    x: (B * P, T, in) and base_out: (B * P, T, out), rows adapter-major; a: (B, r, in); b: (B, out, r).
    """
    return lora_up(base_out, lora_down(x, a), b, scaling)


# Projections that Qwen2- and Llama-style layers call on one and the same input tensor. Their A products
# are one matmul against the concatenated A matrices, so the input is read once rather than once per
# module (LoRA's cost is memory traffic, not arithmetic). Sharing is checked per call by tensor identity,
# so a module called on another input computes its own product.
SHARED_INPUT_PROJECTIONS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


def shared_input_groups(names: list[str]) -> list[list[str]]:
    """Slot names grouped by the input they are called on: siblings of one SHARED_INPUT_PROJECTIONS set
    under one parent module form a group; every other slot is a group of its own. Groups keep `names`' order."""
    groups: dict[tuple[str, int], list[str]] = {}
    for name in names:
        parent, _, leaf = name.rpartition(".")
        family = next((i for i, members in enumerate(SHARED_INPUT_PROJECTIONS) if leaf in members), None)
        groups.setdefault((parent, family) if family is not None else (name, -1), []).append(name)
    return list(groups.values())


class _SharedInputLora:
    """One group's hooks: the first member called on an input computes x [A_1; ...; A_k]^T for every
    member; members called on that same tensor take their columns of it."""

    def __init__(self, names: list[str], adapters: AdapterBatch, scaling: float):
        self.names = names
        self.a = adapters[names[0]][0] if len(names) == 1 else torch.cat([adapters[n][0] for n in names], dim=1)
        self.ranks = [adapters[n][0].shape[1] for n in names]
        self.b = [adapters[n][1] for n in names]
        self.scaling = scaling
        self.input: torch.Tensor | None = None
        self.low_rank: tuple[torch.Tensor, ...] = ()
        self.pending: set[int] = set()

    def hook(self, index: int):
        def run(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
            x = inputs[0]
            if x is not self.input or index not in self.pending:
                self.input, self.pending = x, set(range(len(self.names)))
                self.low_rank = lora_down(x, self.a).split(self.ranks, dim=-1)
            low_rank = self.low_rank[index]
            self.pending.discard(index)
            if not self.pending:  # every member has its product: drop the references
                self.input, self.low_rank = None, ()
            return lora_up(output, low_rank, self.b[index], self.scaling)

        return run


@contextlib.contextmanager
def _lora_hooks(modules: dict[str, torch.nn.Module], adapters: AdapterBatch, scaling: float,
                fuse_shared_inputs: bool = True) -> Iterator[None]:
    handles = []
    groups = shared_input_groups(list(adapters)) if fuse_shared_inputs else [[name] for name in adapters]
    try:
        for names in groups:
            group = _SharedInputLora(names, adapters, scaling)
            for index, name in enumerate(names):
                handles.append(modules[name].register_forward_hook(group.hook(index)))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def apply_adapters(model: PreTrainedModel, layout: list[LoraSlot], adapters: AdapterBatch, scaling: float,
                   checkpoint_layers: bool = False, fuse_shared_inputs: bool = True) -> Iterator[None]:
    """Within the block, the target linears of `model` add each sequence group's own LoRA update.

    With checkpoint_layers, each decoder layer runs under non-reentrant activation checkpointing with
    its LoRA hooks installed inside the checkpointed function, so the recomputation during backward
    (after this block has exited) applies the same adapters. With fuse_shared_inputs (the default), the
    A products of projections called on one input are one matmul (SHARED_INPUT_PROJECTIONS); without,
    each module computes its own (the bench's side-by-side reference).
    """
    modules = dict(model.named_modules())
    if not checkpoint_layers:
        with _lora_hooks(modules, adapters, scaling, fuse_shared_inputs):
            yield
        return
    blocks: dict[str, AdapterBatch] = {}
    for slot in layout:
        if slot.name in adapters:
            blocks.setdefault(slot.block, {})[slot.name] = adapters[slot.name]
    try:
        for block, block_adapters in blocks.items():
            original = modules[block].forward

            def run(*args, _original=original, _adapters=block_adapters, **kwargs):
                with _lora_hooks(modules, _adapters, scaling, fuse_shared_inputs):
                    return _original(*args, **kwargs)

            modules[block].forward = functools.partial(
                torch.utils.checkpoint.checkpoint, run, use_reentrant=False)
        yield
    finally:
        for block in blocks:
            vars(modules[block]).pop("forward", None)
