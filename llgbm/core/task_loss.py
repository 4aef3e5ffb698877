"""The task loss of generated adapters (`behaviour_loss: sft`, Text-to-LoRA's SFT objective): the
cross-entropy of each adapter's answer tokens on records of its own task, under base + that adapter.

B adapters are applied in one forward of the frozen base over B x K records (the batched LoRA hooks; no
PEFT injection, no dense delta-W), and the LM head runs only at the positions that predict an answer
token, so a large vocabulary costs (answer tokens x vocab), not (all tokens x vocab). The head is the
causal LM's output embedding: models whose logits pass through more than it (soft-capping, scaling) are
not supported here.

`group_cross_entropy`, each adapter's mean over its own answer tokens, is also the teachers' objective
(recipes.teachers trains many tasks' LoRAs in one batched forward).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from llgbm.core.lora import AdapterBatch, LoraSlot, apply_adapters
from llgbm.core.precision import autocast_to

IGNORE = -100  # a label that is not scored (prompt tokens and padding), as in completion_batch


def group_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, scored: torch.Tensor) -> torch.Tensor:
    """(G,) the mean cross-entropy per scored token of each of G groups of token positions: the causal-LM
    loss of each group as transformers computes it for a batch of that group alone (one adapter's records).

    scored (G, S) bool marks each group's scored positions among its S; logits (N, V) and targets (N,)
    are those N = scored.sum() positions' logits and next tokens, in scored's row-major order (what
    `scored.nonzero()` or `x[scored]` gives). Each group sums its positions' losses in position order,
    zeros at the unscored ones. fp32 (float64 stays float64); differentiable in the logits. A group
    without a scored position is a ValueError."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    token_loss = F.cross_entropy(logits, targets, reduction="none")
    counts = scored.sum(-1)
    if bool((counts == 0).any()):
        raise ValueError("group_cross_entropy: a group has no scored token (an adapter's records have no answer token)")
    per_position = torch.zeros(scored.shape, dtype=token_loss.dtype, device=token_loss.device)
    return per_position.masked_scatter(scored, token_loss).sum(-1) / counts


def answer_cross_entropy(model: PreTrainedModel, layout: list[LoraSlot], adapters: AdapterBatch, scaling: float,
                         input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                         autocast_dtype: torch.dtype | None = None, checkpoint_layers: bool = False) -> torch.Tensor:
    """(B,) mean cross-entropy per answer token of adapter j on its own records: input_ids, attention_mask
    and labels are (B, K, L), right-padded, labels IGNORE outside the answers. Differentiable with respect
    to the adapter tensors; fp32 (float64 stays float64)."""
    n = input_ids.shape[0]
    device = next(model.parameters()).device
    ids, mask, labels = (t.flatten(0, 1).to(device) for t in (input_ids, attention_mask, labels))
    targets = labels[:, 1:]
    scored = targets != IGNORE
    rows, cols = scored.nonzero(as_tuple=True)  # position cols predicts token cols + 1
    with autocast_to(device.type, autocast_dtype), apply_adapters(model, layout, adapters, scaling,
                                  checkpoint_layers=checkpoint_layers and torch.is_grad_enabled()):
        hidden = model.base_model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
        logits = model.get_output_embeddings()(hidden[rows, cols])
    return group_cross_entropy(logits, targets[rows, cols], scored.view(n, -1))
