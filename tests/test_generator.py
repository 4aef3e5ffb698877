"""The generator kinds: shapes, what each may and may not depend on, and the prompt-blind condition."""
from __future__ import annotations

import pytest
import torch

from llgbm.core.generator import GENERATOR_KINDS, GeneratorConfig, LoraGenerator, generator_shape, parameter_count

ROLES = [0, 0, 1, 2, 2, 2, 3]  # 7 tokens of 4 roles
COLUMNS = [5, 5, 5, 3, 5, 2, 4]  # their real columns, of chunk_width 5 (tokens of 2 x 5)


def _generator(kind: str, condition: str = "prompts") -> LoraGenerator:
    torch.manual_seed(0)
    cfg = GeneratorConfig(kind=kind, condition=condition, chunk_width=5, prompts_per_sample=4, feature_dim=16, channels=[8],
                          hidden_dim=32, depth=2)
    return LoraGenerator(generator_shape(cfg, 12, ROLES, COLUMNS, 10))


@pytest.mark.parametrize("kind", GENERATOR_KINDS)
def test_each_kind_writes_the_token_grid_and_its_scales(kind: str) -> None:
    tokens, scales = _generator(kind)(torch.randn(3, 4, 12))
    assert tokens.shape == (3, 7, 10) and scales.shape == (3, 7, 2)
    assert parameter_count(_generator(kind)) > 0


def test_mlp_generator_ignores_the_order_of_its_prompts_and_reads_their_content() -> None:
    model = _generator("mlp")
    condition = torch.randn(2, 4, 12)
    tokens, _ = model(condition)
    shuffled, _ = model(condition[:, torch.tensor([2, 0, 3, 1])])
    torch.testing.assert_close(tokens, shuffled)
    other, _ = model(torch.randn(2, 4, 12))
    assert (tokens - other).abs().max() > 1e-3


def test_linear_generators_decoder_is_affine_in_the_normalised_prompts_mean() -> None:
    # What makes it compose: past its one LayerNorm, a composition a + b - c of conditions gets the same
    # composition of their decoder outputs (affine: the constant cancels as 1 + 1 - 1 = 1); the mlp kind's not.
    a, b, c = torch.randn(3, 1, 4, 12)
    for kind, affine in (("linear", True), ("mlp", False)):
        model = _generator(kind)
        model.decoder.encode[0] = torch.nn.Identity()  # the LayerNorm (a per-condition scale) out of the way
        expected = model.decoder(a) + model.decoder(b) - model.decoder(c)
        assert torch.allclose(model.decoder(a + b - c), expected, atol=1e-4) == affine, kind


def test_mlp_generator_gives_each_token_role_its_own_head() -> None:
    model = _generator("mlp")
    # Tokens 0 and 1 share role 0: equal trunk features give equal outputs there, and only there.
    with torch.no_grad():
        model.decoder.queries.copy_(model.decoder.queries[0].expand_as(model.decoder.queries))
        model.token_offset.zero_()
    tokens, _ = model(torch.randn(1, 4, 12))
    torch.testing.assert_close(tokens[0, 0], tokens[0, 1])
    assert (tokens[0, 1] - tokens[0, 2]).abs().max() > 1e-4


@pytest.mark.parametrize("kind", GENERATOR_KINDS)
def test_prompt_blind_generator_writes_one_adapter_whatever_its_prompts(kind: str) -> None:
    model = _generator(kind, "constant")
    a, _ = model(torch.randn(2, 4, 12))
    b, _ = model(torch.randn(2, 4, 12))
    torch.testing.assert_close(a, b)
    assert a.requires_grad  # it still trains: only the condition is constant


def test_shape_check_names_the_bad_field() -> None:
    shape = _generator("mlp").shape
    for bad, field in ((dict(kind="conv"), "kind"), (dict(condition="none"), "condition"),
                       (dict(token_roles=(0, 1)), "token_roles"), (dict(depth=0), "depth")):
        with pytest.raises(ValueError, match=field):
            type(shape)(**{**shape.__dict__, **bad}).check()


@pytest.mark.parametrize("kind", GENERATOR_KINDS)
def test_an_untrained_generator_started_at_the_mean_writes_the_mean_target(kind: str) -> None:
    from llgbm.core.generator import GENERATED_STD_EPS, start_at_mean
    from llgbm.core.weight_tokens import standardise

    model = _generator(kind)
    targets, target_scales = torch.randn(5, 7, 10), torch.randn(5, 7, 2)
    start_at_mean(model, targets, target_scales)
    tokens, scales = model(torch.randn(3, 4, 12))
    expected = standardise(targets.mean(0), model.mask, GENERATED_STD_EPS)[0]  # the mean target, normalised
    torch.testing.assert_close(tokens, expected.expand_as(tokens))
    torch.testing.assert_close(scales, target_scales.mean(0).expand_as(scales))
    tokens.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.decoder.parameters())  # it can leave


def test_generated_tokens_are_normalised_and_their_scales_bounded() -> None:
    from llgbm.core.generator import bounded_scales

    model = _generator("mlp")
    mask = model.mask
    assert mask.sum(-1).tolist() == [2 * c for c in COLUMNS]  # rank 2 rows of the real columns
    with torch.no_grad():
        model.token_offset.normal_(0, 30.0)  # far outside any teacher's range
        tokens, scales = model(torch.randn(2, 4, 12))
    assert (tokens[:, ~mask] == 0).all()
    for t in range(7):
        entries = tokens[0, t][mask[t]]
        assert abs(float(entries.mean())) < 1e-5 and float(entries.std(unbiased=False)) == pytest.approx(1, abs=1e-4)
    factor = model.shape.max_scale_factor  # centre 0: std within [1/F, F], mean within F
    assert (scales[..., 1].abs() <= torch.log(torch.tensor(factor)) + 1e-6).all() and (scales[..., 0].abs() <= factor).all()
    centre = torch.randn(7, 2)
    assert torch.allclose(bounded_scales(centre[None], centre, factor), centre[None])  # the centre is kept
    near = centre + 1e-3
    torch.testing.assert_close(bounded_scales(near, centre, factor), near, rtol=0, atol=1e-6)  # identity near it


def test_the_generators_mask_is_the_weight_tokenizers() -> None:
    # The generator knows only its shape: weight_tokens.token_mask gives it the mask WeightTokenizer holds.
    from llgbm.core.lora import layout_of_model
    from llgbm.core.weight_tokens import WeightTokenizer

    from .conftest import micro_config, tiny_random_model

    cfg = micro_config()
    tokenizer = WeightTokenizer(layout_of_model(tiny_random_model(cfg), cfg.lora), 24)  # 24: partial chunks
    shape = generator_shape(GeneratorConfig(chunk_width=24, hidden_dim=16, depth=1), 12, tokenizer.token_roles(),
                            tokenizer.token_columns(), tokenizer.token_dim)
    model = LoraGenerator(shape)
    assert torch.equal(model.mask, tokenizer.mask) and not tokenizer.mask.all()
    assert "mask" not in model.state_dict() and "decoder.heads.tokens_by_role" not in model.state_dict()  # neither is saved


@pytest.mark.parametrize("kind", ["mlp", "linear"])
def test_the_role_heads_indices_move_with_the_generator(kind: str) -> None:
    model = _generator(kind)
    heads = model.decoder.heads
    assert heads.tokens_by_role.tolist() == [0, 1, 2, 3, 4, 5, 6] and heads.role_sizes == [2, 1, 3, 1]
    assert dict(model.named_buffers())["decoder.heads.tokens_by_role"] is heads.tokens_by_role
    assert model.double().decoder.heads.tokens_by_role.dtype == torch.int64  # an index, never cast
