"""The behavioural terms of the training objective, as components.

Each term maps (a batch of generated adapters, the part of the training batch it needs) to (loss, metrics);
`core.losses.combine_terms` joins it with the weight term. The frozen base runs once per term and step
over every adapter's rows (the batched LoRA hooks of `core.lora`).

- `DeltaTerm`: the probe delta of each adapter against its teacher's cached delta (`batch["delta"]`), in
  any `DeltaSpec` variant the computer was built with.
- `KLTerm`: KL from each teacher's next-token distribution after its own task's prompts to the adapter's
  (`kl_ids`, `kl_mask`, `kl_target`, optionally `kl_top_ids`).
- `TaskLossTerm`: the cross-entropy of each adapter's own task's training answers under base + adapter
  (`records_input_ids`, `records_attention_mask`, `records_labels`): Text-to-LoRA's SFT.
"""
from __future__ import annotations

from typing import Mapping, Protocol

import torch
from transformers import PreTrainedModel

from llgbm.core.delta import DeltaComputer
from llgbm.core.lora import AdapterBatch, LoraSlot
from llgbm.core.losses import DeltaLoss, delta_agreement, kl_divergence
from llgbm.core.task_loss import answer_cross_entropy

BEHAVIOUR_LOSSES = ("delta", "kl", "sft")
# The task loss's batch entries: the records the dataset draws for each adapter.
RECORD_KEYS = ("records_input_ids", "records_attention_mask", "records_labels")


class BehaviourTerm(Protocol):
    def __call__(self, adapters: AdapterBatch, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """(scalar loss, read-outs) for B adapters and the first B items of the batch."""


class DeltaTerm:
    """The probe delta: `DeltaLoss` between each adapter's delta and its teacher's."""

    def __init__(self, computer: DeltaComputer, loss: DeltaLoss):
        self.computer, self.loss = computer, loss

    def __call__(self, adapters: AdapterBatch, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        predicted, target = self.computer(adapters), batch["delta"]
        return self.loss(predicted, target), delta_agreement(predicted, target)


class KLTerm:
    """The full-behaviour reference: KL(teacher || adapter) over the answer distributions (directions and
    norms of log-probabilities mean nothing, so it reports no read-outs)."""

    def __init__(self, computer: DeltaComputer):
        self.computer = computer

    def __call__(self, adapters: AdapterBatch, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        predicted = self.computer.answer_log_probs(adapters, batch["kl_ids"], batch["kl_mask"], batch.get("kl_top_ids"))
        return kl_divergence(batch["kl_target"], predicted), {}


class TaskLossTerm:
    """The task loss: the mean over adapters of each one's answer cross-entropy on its own records."""

    def __init__(self, model: PreTrainedModel, layout: list[LoraSlot], scaling: float,
                 autocast_dtype: torch.dtype | None = None, checkpoint_layers: bool = False):
        self.model, self.layout, self.scaling = model, layout, scaling
        self.autocast_dtype, self.checkpoint_layers = autocast_dtype, checkpoint_layers

    def __call__(self, adapters: AdapterBatch, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        per_adapter = answer_cross_entropy(self.model, self.layout, adapters, self.scaling, *(batch[k] for k in RECORD_KEYS),
                                           self.autocast_dtype, self.checkpoint_layers)
        return per_adapter.mean(), {}
