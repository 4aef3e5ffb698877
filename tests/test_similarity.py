"""Nearest by cosine: one ranking for the nearest task, the k nearest teachers and the nearest update."""
import pytest
import torch

from llgbm.core.similarity import cosine_ranking, max_cosine, nearest


def test_ranking_by_cosine_on_a_hand_made_case() -> None:
    references = {"north": torch.tensor([0.0, 2.0]), "east": torch.tensor([3.0, 0.0]), "north_east": torch.tensor([1.0, 1.0])}
    ranked = cosine_ranking(torch.tensor([1.0, 0.0]), references)
    assert [name for name, _ in ranked] == ["east", "north_east", "north"]
    assert [score for _, score in ranked] == pytest.approx([1.0, 2 ** -0.5, 0.0])
    assert nearest(torch.tensor([0.1, 2.0]), references) == "north"  # the length does not count
    tie = cosine_ranking(torch.tensor([1.0, 1.0]), {"b": torch.tensor([1.0, 0.0]), "a": torch.tensor([0.0, 1.0])})
    assert [name for name, _ in tie] == ["b", "a"]  # a tie keeps the references' order


def test_the_nearest_task_of_a_prompt_batch_is_by_its_mean_embedding() -> None:
    tasks = {"north": torch.tensor([[0.0, 1.0], [0.2, 1.0]]), "east": torch.tensor([[1.0, 0.0], [1.0, 0.3]])}
    means = {name: e.mean(0) for name, e in tasks.items()}
    assert nearest(torch.tensor([[0.9, 0.2], [1.0, -0.1]]).mean(0), means) == "east"
    assert nearest(torch.tensor([[0.1, 2.0]]).mean(0), means) == "north"


def test_max_cosine_compares_flat_updates() -> None:
    e1, e2, e3 = torch.eye(3)
    assert max_cosine(e1 + e2, [e1, e3]) == pytest.approx(2 ** -0.5)
    assert max_cosine(torch.eye(2), [torch.tensor([[1.0, 0.0], [0.0, -1.0]]), torch.eye(2) * 5]) == pytest.approx(1.0)
