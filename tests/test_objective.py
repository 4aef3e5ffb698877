"""The behaviour terms and their combination with the weight term, on small exact cases."""
import pytest
import torch

from llgbm.core.delta import DeltaComputer
from llgbm.core.lora import layout_of_model, lora_scaling, stack_adapters
from llgbm.core.losses import DeltaLoss, combine_terms, kl_divergence
from llgbm.core.objective import DeltaTerm, KLTerm, TaskLossTerm
from llgbm.core.task_loss import answer_cross_entropy
from llgbm.testing import random_adapter, random_model, random_probes, random_records, tiny_shape

from .conftest import micro_config


def _toy() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tokens t, L_weights = sum t^2 (gradient 2t) and L_behaviour = sum c * t (gradient c)."""
    tokens = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=torch.float64, requires_grad=True)
    c = torch.tensor([[4.0, 0.0], [-1.0, 2.0]], dtype=torch.float64)
    return tokens, (tokens**2).sum(), (c * tokens).sum()


def test_combine_terms_is_the_plain_sum_in_value_and_gradient_without_balance() -> None:
    tokens, loss_weights, loss_behaviour = _toy()
    total, metrics = combine_terms(loss_weights, loss_behaviour, 0.5, 0.25, "none", tokens)
    (grad,) = torch.autograd.grad(total, tokens)
    c = torch.tensor([[4.0, 0.0], [-1.0, 2.0]], dtype=torch.float64)
    torch.testing.assert_close(grad, 0.5 * 2 * tokens.detach() + 0.25 * c)
    assert metrics["loss_total"] == pytest.approx(0.5 * loss_weights.item() + 0.25 * loss_behaviour.item())
    assert metrics["loss_weights"] == loss_weights.item() and metrics["loss_behaviour"] == loss_behaviour.item()
    assert metrics["grad_norm_weights"] == pytest.approx(float((2 * tokens.detach()).norm()))
    assert metrics["grad_norm_behaviour"] == pytest.approx(float(c.norm()))
    assert metrics["behaviour_coefficient"] == 0.25 and metrics["lambda_delta"] == 0.25


def test_combine_terms_balances_gradient_norms() -> None:
    tokens, loss_weights, loss_behaviour = _toy()
    total, metrics = combine_terms(loss_weights, loss_behaviour, 0.5, 0.25, "grad_norm", tokens)
    (grad,) = torch.autograd.grad(total, tokens)
    weight_grad = 0.5 * 2 * tokens.detach()
    behaviour_grad = grad - weight_grad
    # The behaviour term's gradient enters at lambda times the weight term's norm.
    assert float(behaviour_grad.norm()) == pytest.approx(0.25 * float(weight_grad.norm()))
    assert metrics["behaviour_coefficient"] * metrics["grad_norm_behaviour"] == pytest.approx(
        0.25 * 0.5 * metrics["grad_norm_weights"])


def test_combine_terms_without_a_behaviour_graph_is_the_plain_sum() -> None:
    tokens, loss_weights, loss_behaviour = _toy()
    total, metrics = combine_terms(loss_weights, loss_behaviour.detach(), 2.0, 0.0, "grad_norm", tokens)
    assert total.item() == pytest.approx(2.0 * loss_weights.item())
    assert "grad_norm_behaviour" not in metrics and metrics["loss_behaviour"] == loss_behaviour.item()
    alone, metrics = combine_terms(loss_weights, None, 2.0, 1.0, "none", tokens)
    assert alone.item() == pytest.approx(2.0 * loss_weights.item()) and "loss_behaviour" not in metrics


@pytest.fixture(scope="module")
def world() -> dict:
    cfg = micro_config()
    base = random_model(tiny_shape(cfg.base.tiny)).double()
    layout = layout_of_model(base, cfg.lora)
    generator = torch.Generator().manual_seed(0)
    adapters = stack_adapters([{k: (a.double(), b.double()) for k, (a, b) in random_adapter(layout, generator).items()}
                               for _ in range(2)])
    computer = DeltaComputer(base, layout, lora_scaling(cfg.lora), *random_probes(32, 3, 6, generator))
    return {"cfg": cfg, "base": base, "layout": layout, "adapters": adapters, "computer": computer, "generator": generator}


def test_the_delta_term_is_the_delta_loss_of_the_computed_deltas(world) -> None:
    target = torch.randn(2, world["base"].config.hidden_size, generator=world["generator"], dtype=torch.float64)
    loss, metrics = DeltaTerm(world["computer"], DeltaLoss("combined"))(world["adapters"], {"delta": target})
    deltas = world["computer"](world["adapters"])
    assert loss.item() == pytest.approx(DeltaLoss("combined")(deltas, target).item(), rel=1e-12)
    cosine = torch.nn.functional.cosine_similarity(deltas, target, dim=-1).mean().item()
    assert metrics["delta_cosine_sim"] == pytest.approx(cosine) and metrics["delta_pred_norm"] > 0


def test_the_kl_term_is_the_kl_from_the_teachers_answers(world) -> None:
    ids, mask = random_probes(32, 3, 5, world["generator"])
    batch = {"kl_ids": ids.expand(2, -1, -1), "kl_mask": mask.expand(2, -1, -1),
             "kl_target": torch.log_softmax(torch.randn(2, 3, 32, generator=world["generator"], dtype=torch.float64), -1)}
    loss, metrics = KLTerm(world["computer"])(world["adapters"], batch)
    predicted = world["computer"].answer_log_probs(world["adapters"], batch["kl_ids"], batch["kl_mask"])
    assert loss.item() == pytest.approx(kl_divergence(batch["kl_target"], predicted).item(), rel=1e-12)
    assert loss.item() > 0 and metrics == {}


def test_the_task_loss_term_is_the_mean_answer_cross_entropy(world) -> None:
    records = random_records(32, 6, 7, world["generator"])
    batch = {f"records_{k}": v.view(2, 3, -1) for k, v in records.items()}
    term = TaskLossTerm(world["base"], world["layout"], lora_scaling(world["cfg"].lora))
    loss, _ = term(world["adapters"], batch)
    per_adapter = answer_cross_entropy(world["base"], world["layout"], world["adapters"], lora_scaling(world["cfg"].lora),
                                       batch["records_input_ids"], batch["records_attention_mask"], batch["records_labels"])
    assert loss.item() == pytest.approx(per_adapter.mean().item(), rel=1e-12)
    assert per_adapter[0].item() != pytest.approx(per_adapter[1].item())  # each adapter scored on its own rows
