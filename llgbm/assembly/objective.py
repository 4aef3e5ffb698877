"""The training objective, built from params: the behaviour term `behaviour_loss` names and its combination
with the weight term."""
from __future__ import annotations

import torch
from transformers import PreTrainedModel

from llgbm.assembly.deltas import DeltaDefinition
from llgbm.config import Config
from llgbm.core.delta import DeltaComputer
from llgbm.core.lora import LoraSlot
from llgbm.core.losses import DeltaLoss, MultiTaskLoss
from llgbm.core.objective import BehaviourTerm, DeltaTerm, KLTerm, TaskLossTerm


def behaviour_term(cfg: Config, definition: DeltaDefinition, base: PreTrainedModel, layout: list[LoraSlot],
                   probe_ids: torch.Tensor, probe_mask: torch.Tensor) -> BehaviourTerm:
    """The behaviour term `behaviour_loss` names, on the frozen base (with train.gradient_checkpointing)."""
    checkpointing = cfg.train.gradient_checkpointing
    if cfg.behaviour_loss == "sft":
        return TaskLossTerm(base, layout, definition.scaling, definition.autocast_dtype, checkpointing)
    computer = DeltaComputer(base, layout, definition.scaling, probe_ids, probe_mask, autocast_dtype=definition.autocast_dtype,
                             gradient_checkpointing=checkpointing, spec=definition.spec)
    if cfg.behaviour_loss == "kl":
        return KLTerm(computer)
    return DeltaTerm(computer, DeltaLoss(cfg.delta_loss_type))


def objective(cfg: Config) -> MultiTaskLoss:
    """The weight term's weight, lambda(t) and the balance rule."""
    return MultiTaskLoss(lambda_delta=cfg.lambda_delta, lambda_schedule=cfg.lambda_schedule,
                         warmup_steps=cfg.train.lambda_warmup_steps, delta_loss_type=cfg.delta_loss_type,
                         lambda_weights=cfg.train.lambda_weights, balance=cfg.loss_balance,
                         weights_decay_steps=cfg.train.lambda_weights_decay_steps)
