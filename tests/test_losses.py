import math

import pytest
import torch

from llgbm.core.losses import DeltaLoss, MultiTaskLoss, scheduled_lambda, weight_token_loss


@pytest.mark.parametrize("schedule, step, expected", [
    ("constant", 0, 0.0), ("constant", 99, 0.0), ("constant", 100, 2.0), ("constant", 500, 2.0),
    ("linear", 0, 0.0), ("linear", 25, 0.5), ("linear", 50, 1.0), ("linear", 100, 2.0), ("linear", 1000, 2.0),
    ("cosine", 0, 0.0), ("cosine", 50, 1.0), ("cosine", 25, 2.0 * (1 - math.cos(math.pi / 4)) / 2), ("cosine", 100, 2.0),
])
def test_lambda_schedule_values(schedule: str, step: int, expected: float) -> None:
    assert scheduled_lambda(step, schedule, 100, 2.0) == pytest.approx(expected, abs=1e-12)


def test_zero_warmup_is_the_maximum_from_the_start() -> None:
    for schedule in ("constant", "linear", "cosine"):
        assert scheduled_lambda(0, schedule, 0, 1.5) == 1.5


def test_multitask_loss_follows_its_schedule() -> None:
    loss_fn = MultiTaskLoss(lambda_delta=1.0, lambda_schedule="linear", warmup_steps=4, lambda_weights=0.5)
    pred, target = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    seen = []
    for _ in range(6):
        total, metrics = loss_fn(torch.tensor(2.0), pred, target)
        seen.append(metrics["lambda_delta"])
        assert total.item() == pytest.approx(0.5 * 2.0 + metrics["lambda_delta"] * 1.0)  # mse of pred vs target is 1
        loss_fn.step()
    assert seen == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert metrics["delta_cosine_sim"] == pytest.approx(0.0)
    assert metrics["delta_pred_norm"] == pytest.approx(1.0) and metrics["delta_target_norm"] == pytest.approx(1.0)


def test_max_lambda_overrides_lambda_delta() -> None:
    loss_fn = MultiTaskLoss(lambda_delta=1.0, lambda_schedule="constant", warmup_steps=0, max_lambda=3.0)
    assert loss_fn.get_lambda() == 3.0


def test_delta_loss_types() -> None:
    pred = torch.tensor([[3.0, 0.0], [0.0, 2.0]])
    target = torch.tensor([[1.0, 0.0], [2.0, 0.0]])
    mse = ((2.0**2 + 0) + (2.0**2 + 2.0**2)) / 4
    cosine = ((1 - 1.0) + (1 - 0.0)) / 2
    assert DeltaLoss("mse")(pred, target).item() == pytest.approx(mse)
    assert DeltaLoss("cosine")(pred, target).item() == pytest.approx(cosine)
    assert DeltaLoss("combined")(pred, target).item() == pytest.approx(mse + cosine)
    normalised = ((0.0 + 0.0) + (1.0 + 1.0)) / 4  # unit vectors: (1,0) vs (1,0); (0,1) vs (1,0)
    assert DeltaLoss("mse", normalize=True)(pred, target).item() == pytest.approx(normalised)


def test_unknown_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="huber"):
        DeltaLoss("huber")
    with pytest.raises(ValueError, match="step"):
        MultiTaskLoss(lambda_schedule="step")


def test_weight_loss_ignores_padding_and_refuses_shape_mismatch() -> None:
    mask = torch.tensor([[True, True, False]])
    target = torch.tensor([[[1.0, 2.0, 0.0]]])
    pred = torch.tensor([[[1.0, 4.0, 100.0]]])  # the padded entry must not count
    scales = torch.zeros(1, 1, 2)
    assert weight_token_loss(pred, scales, target, scales, mask).item() == pytest.approx(2.0)
    with pytest.raises(ValueError, match="weight loss"):
        weight_token_loss(pred[..., :2], scales, target, scales, mask)


def test_delta_coefficient_balances_gradient_norms() -> None:
    from llgbm.core.losses import delta_coefficient

    assert delta_coefficient(0.5, 2.0, 8.0, "none") == 0.5  # the plain sum
    assert delta_coefficient(0.5, 2.0, 8.0, "grad_norm") == pytest.approx(0.125)  # 0.125 * 8 = 0.5 * 2
    assert delta_coefficient(0.0, 2.0, 8.0, "grad_norm") == 0.0
    assert delta_coefficient(1.0, 2.0, 0.0, "grad_norm") == 0.0  # no delta gradient: nothing to scale
    with pytest.raises(ValueError, match="loss_balance"):
        delta_coefficient(1.0, 1.0, 1.0, "adaptive")


def test_kl_divergence_on_a_hand_made_case() -> None:
    from llgbm.core.delta import binned_log_probs
    from llgbm.core.losses import kl_divergence

    p = torch.tensor([[0.5, 0.5, 0.0]]).clamp(min=1e-30).log()
    q = torch.tensor([[0.25, 0.25, 0.5]]).log()
    assert kl_divergence(p, q).item() == pytest.approx(math.log(2.0), rel=1e-5)  # 0.5 log 2 + 0.5 log 2
    assert kl_divergence(q, q).item() == pytest.approx(0.0, abs=1e-7)
    binned = binned_log_probs(q, torch.tensor([[2]]))  # token 2, then the rest
    torch.testing.assert_close(binned.exp(), torch.tensor([[0.5, 0.5]]))


def test_the_weight_terms_warm_start_hands_over_linearly() -> None:
    from llgbm.core.losses import decayed_weight

    assert [decayed_weight(step, 2.0, 4) for step in range(6)] == [2.0, 1.5, 1.0, 0.5, 0.0, 0.0]
    assert decayed_weight(1000, 2.0, 0) == 2.0  # no decay: the constant weight
    loss_fn = MultiTaskLoss(lambda_delta=1.0, lambda_weights=2.0, weights_decay_steps=2)
    totals = []
    for _ in range(3):
        total, metrics = loss_fn.combine(torch.tensor(3.0), torch.tensor(5.0))
        totals.append((total.item(), metrics["lambda_weights"]))
        loss_fn.step()
    assert totals == [(2.0 * 3 + 5, 2.0), (1.0 * 3 + 5, 1.0), (0.0 + 5, 0.0)]
