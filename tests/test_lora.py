import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, Qwen2Config

from llgbm.artifacts.adapters import ADAPTER_WEIGHTS, load_adapter_tensors
from llgbm.core.lora import LoraConfig, lora_layout
from llgbm.infra.errors import LlgbmError

# Published Qwen2.5 shapes (config.json values); the layout is read off models built on the meta device.
QWEN25 = {
    "0.5B": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2, vocab_size=151936),
    "1.5B": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                 num_key_value_heads=2, vocab_size=151936),
    "7B": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
               num_key_value_heads=4, vocab_size=152064),
}


@pytest.mark.parametrize("size", sorted(QWEN25))
def test_layout_of_real_qwen25_shapes(size: str) -> None:
    values = QWEN25[size]
    layout = lora_layout(Qwen2Config(**values), LoraConfig(rank=8))
    hidden, inter = values["hidden_size"], values["intermediate_size"]
    kv = hidden // values["num_attention_heads"] * values["num_key_value_heads"]
    expected = {"self_attn.q_proj": (hidden, hidden), "self_attn.k_proj": (hidden, kv),
                "self_attn.v_proj": (hidden, kv), "self_attn.o_proj": (hidden, hidden),
                "mlp.gate_proj": (hidden, inter), "mlp.up_proj": (hidden, inter), "mlp.down_proj": (inter, hidden)}
    assert len(layout) == 7 * values["num_hidden_layers"]
    assert [s.layer for s in layout] == sorted(s.layer for s in layout)
    for slot in layout:
        assert (slot.in_features, slot.out_features) == expected[slot.module]
        assert slot.a_shape == (8, slot.in_features) and slot.b_shape == (slot.out_features, 8)


def test_layout_rejects_unknown_targets() -> None:
    with pytest.raises(LlgbmError, match="lora.target_modules"):
        lora_layout(Qwen2Config(**QWEN25["0.5B"]), LoraConfig(target_modules=["q_proj", "qkv"]))


def test_saved_adapters_load_in_layout_order(random_base) -> None:
    cfg = random_base["cfg"]
    layout = lora_layout(AutoConfig.from_pretrained(random_base["base"]), cfg.lora)
    assert layout == random_base["layout"]
    for directory in random_base["adapters"]:
        tensors = load_adapter_tensors(directory, layout, cfg.lora)
        assert list(tensors) == [s.name for s in layout]


def test_the_shared_initialisation_is_peft_s_and_its_seed_s_alone(random_base) -> None:
    from llgbm.artifacts.adapters import shared_initialisation
    from llgbm.artifacts.base_model import load_base

    cfg = random_base["cfg"]
    init = shared_initialisation(load_base(random_base["base"]), cfg.lora, 0)
    a_keys = [k for k in init if "lora_A" in k]
    assert a_keys and all(init[k].abs().sum() > 0 for k in a_keys)
    assert all(init[k].abs().sum() == 0 for k in init if "lora_B" in k)  # PEFT's init: B = 0
    torch.manual_seed(12345)  # the shared init must not depend on the global RNG state at call time
    again = shared_initialisation(load_base(random_base["base"]), cfg.lora, 0)
    assert all(torch.equal(again[k], init[k]) for k in init)
    other = shared_initialisation(load_base(random_base["base"]), cfg.lora, 1)
    assert not torch.equal(other[a_keys[0]], init[a_keys[0]])


def _copy_adapter(random_base, tmp_path):
    target = tmp_path / "adapter"
    shutil.copytree(random_base["adapters"][0], target)
    return target


def test_missing_adapter_file(random_base, tmp_path) -> None:
    adapter = _copy_adapter(random_base, tmp_path)
    (adapter / ADAPTER_WEIGHTS).unlink()
    with pytest.raises(LlgbmError, match="adapter weights not found"):
        load_adapter_tensors(adapter, random_base["layout"], random_base["cfg"].lora)


def test_corrupt_adapter_file(random_base, tmp_path) -> None:
    adapter = _copy_adapter(random_base, tmp_path)
    (adapter / ADAPTER_WEIGHTS).write_bytes(b"\x00garbage" * 10)
    with pytest.raises(LlgbmError, match=f"{ADAPTER_WEIGHTS}: cannot read adapter weights"):
        load_adapter_tensors(adapter, random_base["layout"], random_base["cfg"].lora)


def test_adapter_shapes_that_do_not_fit(random_base, tmp_path) -> None:
    adapter = _copy_adapter(random_base, tmp_path)
    state = load_file(str(adapter / ADAPTER_WEIGHTS))
    key = next(k for k in state if k.endswith("q_proj.lora_A.weight"))
    state[key] = torch.zeros(state[key].shape[0], state[key].shape[1] + 3)
    save_file(state, str(adapter / ADAPTER_WEIGHTS))
    with pytest.raises(LlgbmError, match="the base model needs"):
        load_adapter_tensors(adapter, random_base["layout"], random_base["cfg"].lora)


def test_adapter_rank_differs_from_params(random_base, tmp_path) -> None:
    adapter = _copy_adapter(random_base, tmp_path)
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["r"] = 16
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(LlgbmError, match="r is 16, params say 2"):
        load_adapter_tensors(adapter, random_base["layout"], random_base["cfg"].lora)


def test_saved_adapter_config_is_stable(random_base) -> None:
    for directory in random_base["adapters"]:
        config = json.loads((directory / "adapter_config.json").read_text())
        assert config["target_modules"] == sorted(random_base["cfg"].lora.target_modules)


def _float64_model_and_adapters(n_adapters: int = 3):
    from transformers import Qwen2ForCausalLM

    from llgbm.core.lora import layout_of_model

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=16, hidden_size=8, intermediate_size=12, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=1)).double().eval()
    model.requires_grad_(False)
    layout = layout_of_model(model, LoraConfig(rank=2, alpha=4.0))
    adapters = {s.name: (torch.randn(n_adapters, *s.a_shape, dtype=torch.float64, requires_grad=True),
                         torch.randn(n_adapters, *s.b_shape, dtype=torch.float64, requires_grad=True))
                for s in layout}
    ids = torch.randint(1, 16, (n_adapters * 2, 5))
    return model, layout, adapters, ids


def _adapted_output_and_grads(model, layout, adapters, ids, fuse: bool):
    from llgbm.core.lora import apply_adapters

    for a, b in adapters.values():
        a.grad = b.grad = None
    with apply_adapters(model, layout, adapters, 2.0, fuse_shared_inputs=fuse):
        out = model.base_model(input_ids=ids).last_hidden_state
    out.square().sum().backward()
    return out.detach(), {n: (a.grad.clone(), b.grad.clone()) for n, (a, b) in adapters.items()}


def test_shared_input_groups_follow_the_parent_module() -> None:
    from llgbm.core.lora import shared_input_groups

    names = [f"model.layers.{i}.{m}" for i in (0, 1) for m in
             ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
              "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")]
    groups = shared_input_groups(names)
    assert groups[:4] == [names[0:3], [names[3]], names[4:6], [names[6]]]
    assert len(groups) == 8 and sorted(sum(groups, [])) == sorted(names)
    assert shared_input_groups(["model.layers.0.self_attn.k_proj", "model.layers.0.mlp.up_proj"]) == [
        ["model.layers.0.self_attn.k_proj"], ["model.layers.0.mlp.up_proj"]]


def test_fused_a_products_equal_one_product_per_module_in_float64() -> None:
    model, layout, adapters, ids = _float64_model_and_adapters()
    fused_out, fused_grads = _adapted_output_and_grads(model, layout, adapters, ids, fuse=True)
    plain_out, plain_grads = _adapted_output_and_grads(model, layout, adapters, ids, fuse=False)
    torch.testing.assert_close(fused_out, plain_out, rtol=1e-12, atol=1e-12)
    for name in adapters:
        for fused, plain in zip(fused_grads[name], plain_grads[name]):
            torch.testing.assert_close(fused, plain, rtol=1e-12, atol=1e-12)


def test_fusion_reads_each_shared_input_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from llgbm.core import lora

    model, layout, adapters, ids = _float64_model_and_adapters()
    calls = []
    original = lora.lora_down
    monkeypatch.setattr(lora, "lora_down", lambda x, a: calls.append(a.shape[1]) or original(x, a))
    for fuse, expected in ((True, [6, 2, 4, 2] * 2), (False, [2] * 14)):
        calls.clear()
        with torch.no_grad(), lora.apply_adapters(model, layout, adapters, 2.0, fuse_shared_inputs=fuse):
            model.base_model(input_ids=ids)
        assert calls == expected  # q/k/v in one product of rank 3r, o, gate/up in one of 2r, down


def test_siblings_called_on_different_inputs_each_get_their_own_product() -> None:
    """A layer that does not call q/k/v on one tensor (another architecture) still gets the LoRA formula."""
    from llgbm.core.lora import apply_adapters, batched_lora_forward

    class TwoInputs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q_proj, self.k_proj = torch.nn.Linear(4, 3), torch.nn.Linear(4, 5)

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.q_proj(x), self.k_proj(y)

    torch.manual_seed(0)
    block = torch.nn.Sequential()
    block.add_module("attn", TwoInputs().double())
    adapters = {"attn.q_proj": (torch.randn(2, 2, 4, dtype=torch.float64), torch.randn(2, 3, 2, dtype=torch.float64)),
                "attn.k_proj": (torch.randn(2, 2, 4, dtype=torch.float64), torch.randn(2, 5, 2, dtype=torch.float64))}
    x, y = torch.randn(4, 6, 4, dtype=torch.float64), torch.randn(4, 6, 4, dtype=torch.float64)
    with torch.no_grad():
        with apply_adapters(block, [], adapters, 0.5):
            q, k = block.attn(x, y)
        expected_q = batched_lora_forward(x, block.attn.q_proj(x), *adapters["attn.q_proj"], 0.5)
        expected_k = batched_lora_forward(y, block.attn.k_proj(y), *adapters["attn.k_proj"], 0.5)
    torch.testing.assert_close(q, expected_q, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(k, expected_k, rtol=1e-12, atol=1e-12)
