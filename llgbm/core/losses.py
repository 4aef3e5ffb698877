"""Losses: weight reconstruction on tokens, the delta loss and the KL divergence (the behavioural terms'
math; the terms themselves are `core.objective`), and the one function that combines a behaviour term with
the weight term under lambda(t)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

DELTA_LOSS_TYPES = ("mse", "cosine", "combined")
LOSS_BALANCES = ("none", "grad_norm")
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


def weight_norm_ratio(pred_tokens: torch.Tensor, pred_scales: torch.Tensor, target_tokens: torch.Tensor,
                      target_scales: torch.Tensor, mask: torch.Tensor) -> float:
    """||generated weights|| / ||target weights|| over the real entries, tokens taken back to raw weights
    (token * exp(log std) + mean): a generated adapter whose norm is still tiny has learnt nothing yet."""
    with torch.no_grad():
        pred_raw = pred_tokens * torch.exp(pred_scales[..., 1:]) + pred_scales[..., :1]
        target_raw = target_tokens * torch.exp(target_scales[..., 1:]) + target_scales[..., :1]
        return ((pred_raw * mask).norm() / (target_raw * mask).norm()).item()


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


def delta_agreement(delta_pred: torch.Tensor, delta_target: torch.Tensor) -> dict[str, float]:
    """How far predicted deltas are from their targets in direction and size (read-outs, no graph): the
    mean cosine and the mean norms over the batch."""
    with torch.no_grad():
        return {"delta_cosine_sim": F.cosine_similarity(delta_pred, delta_target, dim=-1).mean().item(),
                "delta_pred_norm": delta_pred.norm(dim=-1).mean().item(),
                "delta_target_norm": delta_target.norm(dim=-1).mean().item()}


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


def decayed_weight(step: int, lambda_weights: float, decay_steps: int) -> float:
    """The weight term's weight at `step`: lambda_weights throughout (decay_steps 0), or falling linearly from
    it to 0 over the first decay_steps (a weight-matching warm start that hands over to the behaviour term:
    the seed's lambda(t) turned around)."""
    if decay_steps <= 0:
        return lambda_weights
    return lambda_weights * max(0.0, 1.0 - step / decay_steps)


def delta_coefficient(lam: float, grad_norm_weights: float, grad_norm_behaviour: float, balance: str) -> float:
    """The factor on the behaviour term's gradient. "none": lambda itself (the plain sum). "grad_norm": lambda
    times ||grad of lambda_weights * L_weights|| / ||grad of L_behaviour||, so that lambda is the ratio of the
    two terms' gradient norms, the same on every base model (the delta is a stiff function of the weights,
    and its raw gradient can be tens of times the weight term's)."""
    if balance not in LOSS_BALANCES:
        raise ValueError(f"loss_balance '{balance}' is not one of {LOSS_BALANCES}")
    if balance == "none" or lam == 0:
        return lam
    return lam * grad_norm_weights / grad_norm_behaviour if grad_norm_behaviour > 0 else 0.0


def combine_terms(loss_weights: torch.Tensor, loss_behaviour: torch.Tensor | None, lambda_weights: float, lam: float,
                  balance: str, tokens: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """The one place the terms meet: (what to differentiate, metrics). loss_total is the value of
    lambda_weights * L_weights + lam * L_behaviour.

    Where the behaviour term carries a graph to `tokens` (the generated weight tokens), each term's gradient
    there is taken, its norm logged, the behavioural one weighted by `delta_coefficient`, and one surrogate
    is returned whose gradient through the generator is lambda_weights * dL_weights + coefficient *
    dL_behaviour: with balance "none" exactly the plain sum's. Otherwise (no behaviour term, or one measured
    without a graph while lambda is 0) the plain sum is returned."""
    metrics = {"loss_weights": loss_weights.item(), "lambda_delta": lam, "lambda_weights": lambda_weights}
    total = lambda_weights * loss_weights
    if loss_behaviour is None:
        metrics["loss_total"] = total.item()
        return total, metrics
    metrics["loss_behaviour"] = loss_behaviour.item()
    plain = total + lam * loss_behaviour
    metrics["loss_total"] = plain.item()
    if tokens is None or not loss_behaviour.requires_grad:
        return plain, metrics
    (grad_behaviour,) = torch.autograd.grad(loss_behaviour, tokens)
    (grad_weights,) = torch.autograd.grad(loss_weights, tokens, retain_graph=True)
    norm_weights, norm_behaviour = grad_weights.norm().item(), grad_behaviour.norm().item()
    coefficient = delta_coefficient(lam, lambda_weights * norm_weights, norm_behaviour, balance)
    metrics.update(grad_norm_weights=norm_weights, grad_norm_behaviour=norm_behaviour, behaviour_coefficient=coefficient)
    return total + coefficient * (tokens * grad_behaviour).sum(), metrics


class MultiTaskLoss(nn.Module):
    """L = lambda_w(t) * L_weights + lambda(t) * L_behaviour, with lambda(t) from the schedule, lambda_w(t)
    from `decayed_weight` and the step counter that drives both; `balance` says how the behaviour term's
    gradient is weighted in training (see `combine_terms`). Its forward is the spec's: the delta term
    (`DeltaLoss`) on given deltas."""

    def __init__(self, lambda_delta: float = 1.0, lambda_schedule: str = "constant", warmup_steps: int = 0,
                 max_lambda: float | None = None, delta_loss_type: str = "mse", lambda_weights: float = 1.0,
                 normalize: bool = False, balance: str = "none", weights_decay_steps: int = 0):
        super().__init__()
        delta_coefficient(0.0, 0.0, 0.0, balance)  # reject unknown names now
        self.balance = balance
        self.lambda_delta = lambda_delta
        # The spec's max_lambda: the value after warmup; by default lambda_delta itself.
        self.max_lambda = lambda_delta if max_lambda is None else max_lambda
        scheduled_lambda(0, lambda_schedule, warmup_steps, self.max_lambda)  # reject unknown names now
        self.lambda_schedule = lambda_schedule
        self.warmup_steps = warmup_steps
        self.lambda_weights = lambda_weights
        self.weights_decay_steps = weights_decay_steps
        self.delta_loss_fn = DeltaLoss(delta_loss_type, normalize)
        self.current_step = 0

    def get_lambda(self) -> float:
        return scheduled_lambda(self.current_step, self.lambda_schedule, self.warmup_steps, self.max_lambda)

    def get_lambda_weights(self) -> float:
        return decayed_weight(self.current_step, self.lambda_weights, self.weights_decay_steps)

    def combine(self, loss_weights: torch.Tensor, loss_behaviour: torch.Tensor | None,
                tokens: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """`combine_terms` at the current step's weights."""
        return combine_terms(loss_weights, loss_behaviour, self.get_lambda_weights(), self.get_lambda(), self.balance,
                             tokens)

    def forward(self, loss_weights: torch.Tensor, delta_pred: torch.Tensor | None,
                delta_target: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, float]]:
        if delta_pred is None:
            return self.combine(loss_weights, None)
        total, metrics = self.combine(loss_weights, self.delta_loss_fn(delta_pred, delta_target))
        return total, {**metrics, **delta_agreement(delta_pred, delta_target)}

    def step(self) -> None:
        self.current_step += 1
