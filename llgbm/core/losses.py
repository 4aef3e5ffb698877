"""Losses: weight reconstruction on tokens, the behavioural terms (the probe delta, the KL reference, the
task loss), and their scheduled sum."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

DELTA_LOSS_TYPES = ("mse", "cosine", "combined")
LOSS_BALANCES = ("none", "grad_norm")
BEHAVIOUR_LOSSES = ("delta", "kl", "sft")
LAMBDA_SCHEDULES = ("constant", "linear", "cosine")


def weight_token_loss(pred_tokens: torch.Tensor, pred_scales: torch.Tensor, target_tokens: torch.Tensor,
                      target_scales: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MSE over the real (unpadded) entries of the normalised tokens, plus MSE of the scales."""
    if pred_tokens.shape != target_tokens.shape or pred_scales.shape != target_scales.shape:
        raise ValueError(f"weight loss: predicted {tuple(pred_tokens.shape)}/{tuple(pred_scales.shape)} vs target "
                         f"{tuple(target_tokens.shape)}/{tuple(target_scales.shape)}")
    mask = mask.to(pred_tokens.dtype).expand_as(pred_tokens)
    token_mse = ((pred_tokens - target_tokens).square() * mask).sum() / mask.sum()
    return token_mse + F.mse_loss(pred_scales, target_scales)


class DeltaLoss(nn.Module):
    """Loss between predicted and target deltas (B, hidden): mse, cosine (1 - cos) or combined (sum)."""

    def __init__(self, loss_type: str = "mse", normalize: bool = False):
        super().__init__()
        if loss_type not in DELTA_LOSS_TYPES:
            raise ValueError(f"delta_loss_type '{loss_type}' is not one of {DELTA_LOSS_TYPES}")
        self.loss_type = loss_type
        self.normalize = normalize

    def forward(self, delta_pred: torch.Tensor, delta_target: torch.Tensor) -> torch.Tensor:
        if self.normalize:
            delta_pred = F.normalize(delta_pred, p=2, dim=-1)
            delta_target = F.normalize(delta_target, p=2, dim=-1)
        mse = F.mse_loss(delta_pred, delta_target)
        if self.loss_type == "mse":
            return mse
        cosine = (1 - F.cosine_similarity(delta_pred, delta_target, dim=-1)).mean()
        return cosine if self.loss_type == "cosine" else mse + cosine


def kl_divergence(target_log_probs: torch.Tensor, pred_log_probs: torch.Tensor) -> torch.Tensor:
    """KL(teacher || generated) = sum_v p_t(v) (log p_t(v) - log p_g(v)) over the last axis, averaged over
    the rest (adapters and prompts); both arguments are log-probabilities over the same bins."""
    return (target_log_probs.exp() * (target_log_probs - pred_log_probs)).sum(-1).mean()


class KLLoss(nn.Module):
    """The full-behaviour reference objective (behaviour_loss: kl)."""

    def forward(self, pred_log_probs: torch.Tensor, target_log_probs: torch.Tensor) -> torch.Tensor:
        return kl_divergence(target_log_probs, pred_log_probs)


class TaskLoss(nn.Module):
    """The task loss (behaviour_loss: sft): its "prediction" is each adapter's own cross-entropy on its
    task's records (core.task_loss), and it has no target; the term is their mean."""

    def forward(self, pred_cross_entropy: torch.Tensor, target: None = None) -> torch.Tensor:
        return pred_cross_entropy.mean()


def scheduled_lambda(step: int, schedule: str, warmup_steps: int, max_lambda: float) -> float:
    """lambda(t): constant is 0 until warmup ends; linear and cosine ramp from 0 to max over warmup."""
    if schedule not in LAMBDA_SCHEDULES:
        raise ValueError(f"lambda_schedule '{schedule}' is not one of {LAMBDA_SCHEDULES}")
    if step >= warmup_steps:
        return max_lambda
    progress = step / warmup_steps
    if schedule == "constant":
        return 0.0
    if schedule == "linear":
        return max_lambda * progress
    return max_lambda * (1 - math.cos(math.pi * progress)) / 2


def delta_coefficient(lam: float, grad_norm_weights: float, grad_norm_delta: float, balance: str) -> float:
    """The factor on the delta term's gradient. "none": lambda itself (the plain sum). "grad_norm": lambda
    times ||grad of lambda_weights * L_weights|| / ||grad of L_delta||, so that lambda is the ratio of the two
    terms' gradient norms, the same on every base model (the delta is a stiff function of the weights, and
    its raw gradient can be tens of times the weight term's)."""
    if balance not in LOSS_BALANCES:
        raise ValueError(f"loss_balance '{balance}' is not one of {LOSS_BALANCES}")
    if balance == "none" or lam == 0:
        return lam
    return lam * grad_norm_weights / grad_norm_delta if grad_norm_delta > 0 else 0.0


class MultiTaskLoss(nn.Module):
    """L = lambda_weights * L_weights + lambda(t) * L_delta, with lambda(t) from the schedule; `balance`
    says how the delta term's gradient is weighted in training (see delta_coefficient)."""

    def __init__(self, lambda_delta: float = 1.0, lambda_schedule: str = "constant", warmup_steps: int = 0,
                 max_lambda: float | None = None, delta_loss_type: str = "mse", lambda_weights: float = 1.0,
                 normalize: bool = False, balance: str = "none", behaviour: str = "delta"):
        super().__init__()
        delta_coefficient(0.0, 0.0, 0.0, balance)  # reject unknown names now
        if behaviour not in BEHAVIOUR_LOSSES:
            raise ValueError(f"behaviour_loss '{behaviour}' is not one of {BEHAVIOUR_LOSSES}")
        self.balance = balance
        self.behaviour = behaviour
        self.lambda_delta = lambda_delta
        # The spec's max_lambda: the value after warmup; by default lambda_delta itself.
        self.max_lambda = lambda_delta if max_lambda is None else max_lambda
        scheduled_lambda(0, lambda_schedule, warmup_steps, self.max_lambda)  # reject unknown names now
        self.lambda_schedule = lambda_schedule
        self.warmup_steps = warmup_steps
        self.lambda_weights = lambda_weights
        # The behavioural term: the delta loss, the KL reference (whose "delta" is log-probabilities), or the
        # task loss (whose "delta" is each adapter's cross-entropy).
        self.delta_loss_fn = {"delta": lambda: DeltaLoss(delta_loss_type, normalize), "kl": KLLoss,
                              "sft": TaskLoss}[behaviour]()
        self.current_step = 0

    def get_lambda(self) -> float:
        return scheduled_lambda(self.current_step, self.lambda_schedule, self.warmup_steps, self.max_lambda)

    def forward(self, loss_weights: torch.Tensor, delta_pred: torch.Tensor | None,
                delta_target: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, float]]:
        current_lambda = self.get_lambda()
        total = self.lambda_weights * loss_weights
        metrics = {"loss_weights": loss_weights.item(), "lambda_delta": current_lambda}
        if delta_pred is not None:
            loss_delta = self.delta_loss_fn(delta_pred, delta_target)
            total = total + current_lambda * loss_delta
            metrics["loss_delta"] = loss_delta.item()
            if self.behaviour == "delta":  # directions and norms of log-probabilities would mean nothing
                with torch.no_grad():
                    metrics.update(
                        delta_cosine_sim=F.cosine_similarity(delta_pred, delta_target, dim=-1).mean().item(),
                        delta_pred_norm=delta_pred.norm(dim=-1).mean().item(),
                        delta_target_norm=delta_target.norm(dim=-1).mean().item(),
                    )
        metrics["loss_total"] = total.item()
        return total, metrics

    def step(self) -> None:
        self.current_step += 1
