"""Behavioural deltas: delta(M, B) = mean over probes of h_M(p, last token) - h_B(p, last token), where h
is the last layer's hidden state after the final norm (the seed's definition, `DeltaSpec()`).

Variants (`DeltaSpec`): per probe instead of the mean (a (P, hidden) target), and several decoder layers
instead of the last, each layer's delta divided by the base model's state scale at that layer (the RMS of
its probe states) so that no layer dominates; layers are concatenated along the feature axis.

B adapters are applied in one forward of the frozen base over B x P sequences: forward hooks on the
target linear layers add scaling * x A_j^T B_j^T for the rows of adapter j (two batched matmuls; no
dense delta-W, no LM head, no PEFT injection into the base). With grad it is the training-time delta;
under no_grad it fills the cache.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from peft import PeftModel
from transformers import PreTrainedModel

from llgbm.core.lora import AdapterBatch, LoraSlot, apply_adapters
from llgbm.core.precision import autocast_to
from llgbm.infra.errors import LlgbmError

DELTA_REDUCTIONS = ("mean", "per_probe")

@dataclass(frozen=True)
class DeltaSpec:
    """Which delta. `layers` are decoder-layer indices (0-based; the last layer's state is read after the
    final norm), None for the last layer alone; `normalise` divides each layer's delta by the base's
    state scale at that layer."""
    reduce: str = "mean"  # "mean" over probes or "per_probe"
    layers: tuple[int, ...] | None = None
    normalise: bool = False

    def identity(self) -> dict:
        return {"reduce": self.reduce, "layers": None if self.layers is None else list(self.layers),
                "normalise": self.normalise}

    def shape(self, probes: int, hidden_size: int) -> tuple[int, ...]:
        """The shape of one adapter's delta."""
        width = hidden_size * (1 if self.layers is None else len(self.layers))
        return (width,) if self.reduce == "mean" else (probes, width)


def delta_spec(reduce: str, layers: str | list[int], num_layers: int) -> DeltaSpec:
    """The spec of params' `delta_reduce` and `delta_layers` ("last", "all" or a list of layer indices)."""
    if reduce not in DELTA_REDUCTIONS:
        raise LlgbmError(f"delta_reduce: '{reduce}', expected one of {', '.join(DELTA_REDUCTIONS)}")
    if layers == "last":
        return DeltaSpec(reduce)
    chosen = list(range(num_layers)) if layers == "all" else sorted(set(layers))
    if not chosen or min(chosen) < 0 or max(chosen) >= num_layers:
        raise LlgbmError(f"delta_layers: {layers} names layers outside 0..{num_layers - 1} of the base model")
    return DeltaSpec(reduce, tuple(chosen), normalise=True)


def last_token_states(model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      layers: tuple[int, ...] | None = None) -> torch.Tensor:
    """(rows, layers, hidden): hidden states at each right-padded sequence's last real token, of the given
    decoder layers (None: the last layer, after the final norm), in fp32 (float64 stays float64)."""
    out = model.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                           output_hidden_states=layers is not None)
    # hidden_states[l + 1] is layer l's output; the last entry is after the final norm.
    hidden = [out.last_hidden_state] if layers is None else [out.hidden_states[layer + 1] for layer in layers]
    last = attention_mask.sum(-1) - 1
    rows = torch.arange(input_ids.shape[0], device=input_ids.device)
    states = torch.stack([h[rows, last] for h in hidden], dim=1)
    return states.to(torch.promote_types(states.dtype, torch.float32))


def layer_scales(base_states: torch.Tensor) -> torch.Tensor:
    """(layers,): the RMS of the base model's probe states (P, layers, hidden) at each layer."""
    return base_states.square().mean(dim=(0, 2)).sqrt()


def reduce_delta(states: torch.Tensor, base_states: torch.Tensor, spec: DeltaSpec) -> torch.Tensor:
    """states (B, P, layers, hidden) of adapted models and base_states (P, layers, hidden) -> the spec's
    deltas: (B, layers * hidden) averaged over probes, or (B, P, layers * hidden) per probe."""
    delta = states - base_states
    if spec.normalise:
        delta = delta / layer_scales(base_states)[:, None]
    if spec.reduce == "mean":
        delta = delta.mean(1)
    return delta.flatten(-2)


@torch.no_grad()
def probe_states(model: PreTrainedModel | PeftModel, probe_ids: torch.Tensor, probe_mask: torch.Tensor,
                 layers: tuple[int, ...] | None = None) -> torch.Tensor:
    """(P, layers, hidden) for a causal LM or a PeftModel wrapping one (its LoRA applied by PEFT's own
    layers): the reference path that the batched hooks are checked against. fp32, on CPU."""
    causal_lm = model.get_base_model() if isinstance(model, PeftModel) else model
    device = next(causal_lm.parameters()).device
    return last_token_states(causal_lm, probe_ids.to(device), probe_mask.to(device), layers).cpu()


class DeltaComputer:
    """delta(base + adapter_j, base) for a batch of adapters on a fixed probe batch, as `spec` defines it."""

    def __init__(self, model: PreTrainedModel, layout: list[LoraSlot], scaling: float,
                 probe_ids: torch.Tensor, probe_mask: torch.Tensor,
                 autocast_dtype: torch.dtype | None = None, gradient_checkpointing: bool = False,
                 spec: DeltaSpec = DeltaSpec(), fuse_shared_inputs: bool = True):
        self.model = model
        self.layout = layout
        self.scaling = scaling
        self.spec = spec
        device = next(model.parameters()).device
        self.probe_ids = probe_ids.to(device)
        self.probe_mask = probe_mask.to(device)
        self.autocast_dtype = autocast_dtype
        self.gradient_checkpointing = gradient_checkpointing
        self.fuse_shared_inputs = fuse_shared_inputs  # core.lora.apply_adapters; off only as the bench's reference
        with torch.no_grad():
            self.base_states = self._states(None)[0]  # (P, layers, hidden)

    def _states(self, adapters: AdapterBatch | None) -> torch.Tensor:
        n = 1 if adapters is None else next(iter(adapters.values()))[0].shape[0]
        ids = self.probe_ids.repeat(n, 1)
        mask = self.probe_mask.repeat(n, 1)
        device_type = ids.device.type
        autocast = autocast_to(device_type, self.autocast_dtype)
        adapters_ctx = (apply_adapters(self.model, self.layout, adapters, self.scaling,
                                       checkpoint_layers=self.gradient_checkpointing and torch.is_grad_enabled(),
                                       fuse_shared_inputs=self.fuse_shared_inputs)
                        if adapters else contextlib.nullcontext())
        with autocast, adapters_ctx:
            states = last_token_states(self.model, ids, mask, self.spec.layers)
        return states.view(n, self.probe_ids.shape[0], *states.shape[1:])

    def __call__(self, adapters: AdapterBatch) -> torch.Tensor:
        """(B, *spec.shape) deltas in fp32; differentiable with respect to the adapter tensors."""
        return reduce_delta(self._states(adapters), self.base_states, self.spec)

    def answer_log_probs(self, adapters: AdapterBatch, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                         top_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Each adapter's next-token log-distribution after each of its own prompts, (B, K, T) right-padded,
        in one batched forward of the base with its LM head: (B, K, vocab) in fp32, or over the bins of
        `top_ids` (B, K, k) plus one for the rest of the vocabulary (see `binned_log_probs`)."""
        n, k = input_ids.shape[:2]
        ids, mask = input_ids.flatten(0, 1).to(self.probe_ids.device), attention_mask.flatten(0, 1).to(self.probe_ids.device)
        with autocast_to(ids.device.type, self.autocast_dtype), apply_adapters(self.model, self.layout, adapters, self.scaling,
                                      checkpoint_layers=self.gradient_checkpointing and torch.is_grad_enabled(),
                                      fuse_shared_inputs=self.fuse_shared_inputs):
            logits = self.model(input_ids=ids, attention_mask=mask, use_cache=False, logits_to_keep=0).logits
        last = mask.sum(-1) - 1
        log_probs = torch.log_softmax(logits[torch.arange(ids.shape[0], device=ids.device), last].float(), dim=-1)
        log_probs = log_probs.view(n, k, -1)
        return log_probs if top_ids is None else binned_log_probs(log_probs, top_ids.to(log_probs.device))


def binned_log_probs(log_probs: torch.Tensor, top_ids: torch.Tensor) -> torch.Tensor:
    """(..., vocab) log-probabilities -> (..., k + 1): those of the `top_ids` tokens, then the log of the
    rest of the mass, so a large vocabulary's distribution is kept as top-k plus remainder."""
    top = log_probs.gather(-1, top_ids)
    rest = torch.log1p(-top.exp().sum(-1, keepdim=True).clamp(max=1 - 1e-6))
    return torch.cat([top, rest], dim=-1)
