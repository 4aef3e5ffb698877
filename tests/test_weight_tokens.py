import pytest
import torch
from peft import PeftModel
from peft.utils import get_peft_model_state_dict
from transformers import Qwen2Config

from llgbm.artifacts.adapters import load_adapter_tensors, save_adapter
from llgbm.artifacts.base_model import load_base
from llgbm.core.lora import LoraConfig, lora_layout
from llgbm.core.weight_tokens import WeightTokenizer, token_mask

from .test_lora import QWEN25


def _tokenizer(random_base, chunk_width: int = 24):
    return random_base["layout"], WeightTokenizer(random_base["layout"], chunk_width)


def _adapters(random_base, layout) -> list[dict]:
    return [load_adapter_tensors(d, layout, random_base["cfg"].lora) for d in random_base["adapters"]]


def test_shapes_follow_the_layout() -> None:
    layout = lora_layout(Qwen2Config(**QWEN25["0.5B"]), LoraConfig(rank=8))
    tokenizer = WeightTokenizer(layout, 128)
    assert tokenizer.token_dim == 8 * 128
    # per layer: q 7+7, k 7+1, v 7+1, o 7+7, gate 7+38, up 7+38, down 38+7 tokens
    assert tokenizer.num_tokens == 24 * 179
    assert tokenizer.mask.shape == (tokenizer.num_tokens, tokenizer.token_dim)


def test_token_mask_marks_each_rows_real_columns() -> None:
    # Tokens of rank 2 x chunk_width 4, row-major: the first 3 columns of each row are real, then only 1.
    real = token_mask([3, 1], token_dim=8, chunk_width=4).int().tolist()
    assert real == [[1, 1, 1, 0, 1, 1, 1, 0], [1, 0, 0, 0, 1, 0, 0, 0]]
    tokenizer = WeightTokenizer(lora_layout(Qwen2Config(**QWEN25["0.5B"]), LoraConfig(rank=2)), 100)  # 896 = 8 x 100 + 96
    assert torch.equal(tokenizer.mask, token_mask(tokenizer.token_columns(), tokenizer.token_dim, 100))
    assert tokenizer.mask[8].sum() == 2 * 96  # q_proj A's last chunk


@pytest.mark.parametrize("chunk_width", [7, 24, 64])
def test_round_trip_is_exact_on_every_adapter(random_base, chunk_width: int) -> None:
    layout, tokenizer = _tokenizer(random_base, chunk_width)
    for tensors in _adapters(random_base, layout):
        tokens, scales = tokenizer.tokenize(tensors)
        assert (tokens[~tokenizer.mask] == 0).all()  # padding carries no value
        back = tokenizer.detokenize(tokens, scales)
        for name, (a, b) in tensors.items():
            for original, restored in ((a, back[name][0]), (b, back[name][1])):
                assert (restored - original).norm() <= 1e-6 * original.norm()


def test_tokens_are_normalised_per_chunk(random_base) -> None:
    layout, tokenizer = _tokenizer(random_base)
    tensors = _adapters(random_base, layout)[-1]
    tokens, _ = tokenizer.tokenize(tensors)
    count = tokenizer.mask.sum(-1)
    mean = (tokens * tokenizer.mask).sum(-1) / count
    var = (tokens * tokenizer.mask).square().sum(-1) / count
    torch.testing.assert_close(mean, torch.zeros_like(mean), atol=1e-5, rtol=0)
    torch.testing.assert_close(var, torch.ones_like(var), atol=1e-4, rtol=0)


def test_batched_and_differentiable(random_base) -> None:
    layout, tokenizer = _tokenizer(random_base)
    adapters = _adapters(random_base, layout)[:3]
    stacked = {n: (torch.stack([a[n][0] for a in adapters]), torch.stack([a[n][1] for a in adapters])) for n in adapters[0]}
    tokens, scales = tokenizer.tokenize(stacked)
    assert tokens.shape == (3, tokenizer.num_tokens, tokenizer.token_dim)
    single_tokens, _ = tokenizer.tokenize(adapters[1])
    torch.testing.assert_close(tokens[1], single_tokens)
    tokens = tokens.clone().requires_grad_(True)
    scales = scales.clone().requires_grad_(True)
    back = tokenizer.detokenize(tokens, scales)
    sum(a.square().sum() + b.square().sum() for a, b in back.values()).backward()
    assert tokens.grad[:, tokenizer.mask].abs().sum() > 0
    assert (tokens.grad[:, ~tokenizer.mask] == 0).all()  # padding never reaches a loss
    assert scales.grad.abs().sum() > 0


def test_detokenised_adapter_saves_and_loads_with_peft(random_base, tmp_path) -> None:
    layout, tokenizer = _tokenizer(random_base)
    tensors = _adapters(random_base, layout)[0]
    restored = tokenizer.detokenize(*tokenizer.tokenize(tensors))
    save_adapter(load_base(random_base["base"]), restored, layout, random_base["cfg"].lora, tmp_path / "adapter")
    loaded = get_peft_model_state_dict(PeftModel.from_pretrained(load_base(random_base["base"]), str(tmp_path / "adapter")))
    for slot in layout:
        torch.testing.assert_close(loaded[slot.peft_a_key], tensors[slot.name][0], rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(loaded[slot.peft_b_key], tensors[slot.name][1], rtol=1e-6, atol=1e-7)
