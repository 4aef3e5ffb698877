"""Adapters combined into one: the factor mean (the evaluation's factor_mean_teacher) and the exact
combination of updates (the diagnostics' update_mean_teacher, nearest and k-nearest, task arithmetic)."""
import torch

from llgbm.core.adapter_math import combine_updates, mean_of_factors


def test_mean_of_factors_on_a_hand_made_case() -> None:
    one = {"m": (torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0], [5.0]]))}
    two = {"m": (torch.tensor([[3.0, 4.0]]), torch.tensor([[1.0], [1.0]]))}
    mean = mean_of_factors([one, two])
    assert torch.equal(mean["m"][0], torch.tensor([[2.0, 3.0]])) and torch.equal(mean["m"][1], torch.tensor([[2.0], [3.0]]))
    # Its update is the product of the means (2 * [2, 3] = [4, 6] in row 0), not the mean update ([4, 5]).
    assert torch.equal((mean["m"][1] @ mean["m"][0])[0], torch.tensor([4.0, 6.0]))
    assert torch.equal(((one["m"][1] @ one["m"][0] + two["m"][1] @ two["m"][0]) / 2)[0], torch.tensor([3.0, 5.0]))


def test_combined_updates_are_exact() -> None:
    gen = torch.Generator().manual_seed(0)
    adapters = [{"m": (torch.randn(2, 5, generator=gen), torch.randn(4, 2, generator=gen))} for _ in range(3)]
    combined = combine_updates(adapters, [1.0, 1.0, -1.0])
    a, b = combined["m"]
    assert a.shape == (6, 5) and b.shape == (4, 6)
    expected = sum(w * (x["m"][1] @ x["m"][0]) for x, w in zip(adapters, [1.0, 1.0, -1.0]))
    torch.testing.assert_close(b @ a, expected)


def test_equal_weights_give_the_mean_update_on_a_hand_made_case() -> None:
    one = {"m": (torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0]]))}  # update [[2, 0]]
    two = {"m": (torch.tensor([[0.0, 1.0]]), torch.tensor([[4.0]]))}  # update [[0, 4]]
    a, b = combine_updates([one, two], [0.5, 0.5])["m"]
    assert torch.equal(a, torch.tensor([[1.0, 0.0], [0.0, 1.0]])) and torch.equal(b, torch.tensor([[1.0, 2.0]]))
    assert torch.equal(b @ a, torch.tensor([[1.0, 2.0]]))
