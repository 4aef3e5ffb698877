"""The fixtures the tests and the bench check the batched paths with are what they say they are."""
import torch

from llgbm.testing import random_probes, random_records, tiny_shape

from .conftest import micro_config


def test_random_probes_are_right_padded_and_of_unequal_length() -> None:
    ids, mask = random_probes(32, 5, 8, torch.Generator().manual_seed(0))
    assert ids.shape == mask.shape == (5, 8)
    assert mask.sum(-1).tolist() == [8, 8, 7, 6, 6]  # from the full length down to 3/4 of it
    assert (mask[:, :-1] >= mask[:, 1:]).all()  # right-padded: no real token after a pad
    assert (ids[mask == 0] == 0).all() and (ids[mask == 1] >= 3).all()  # pads are 0, real tokens skip the specials


def test_random_records_score_the_last_two_real_tokens() -> None:
    records = random_records(32, 4, 6, torch.Generator().manual_seed(0))
    for ids, mask, labels in zip(records["input_ids"], records["attention_mask"], records["labels"]):
        length = int(mask.sum())
        scored = (labels != -100).nonzero().flatten().tolist()
        assert scored == [length - 2, length - 1] and (labels[scored] == ids[scored]).all()


def test_tiny_shape_reads_the_tiny_section() -> None:
    tiny = micro_config().base.tiny
    shape = tiny_shape(tiny)
    assert (shape["hidden_size"], shape["num_hidden_layers"], shape["num_attention_heads"], shape["num_key_value_heads"],
            shape["intermediate_size"]) == (tiny.hidden_size, tiny.num_layers, tiny.num_heads, tiny.num_kv_heads,
                                            tiny.intermediate_size)
