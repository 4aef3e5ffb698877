"""The generator's condition without an encoder: the factors reference."""
import torch

from llgbm.data.encoder import factor_embeddings


def test_factor_embeddings_are_one_hot_selector_beside_one_hot_transform() -> None:
    rows = factor_embeddings([("largest", "mirror"), ("median", "plus_one")], ["largest", "median"],
                             ["plus_one", "mirror"])
    assert torch.equal(rows, torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 1.0, 0.0]]))
    # A composition's condition is the sum of its parts' (the property the reference exists to give).
    a, b, c, d = factor_embeddings([("largest", "mirror"), ("median", "plus_one"), ("largest", "plus_one"),
                                    ("median", "mirror")], ["largest", "median"], ["plus_one", "mirror"])
    assert torch.equal(a + b, c + d)
