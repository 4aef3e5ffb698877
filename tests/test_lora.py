import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, Qwen2Config

from llgbm.artifacts.adapters import ADAPTER_WEIGHTS, load_adapter_tensors
from llgbm.core.lora import LoraConfig, lora_layout
from llgbm.infra.errors import LlgbmError

from .conftest import checkpoint_dirs

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


def test_teacher_adapters_match_the_layout(micro) -> None:
    cfg = micro["cfg"]
    layout = lora_layout(AutoConfig.from_pretrained(micro["base"]), cfg.lora)
    for directory in checkpoint_dirs(micro["teachers"]):
        tensors = load_adapter_tensors(directory, layout, cfg.lora)
        assert list(tensors) == [s.name for s in layout]


def test_all_teachers_start_from_one_initialisation(micro) -> None:
    init = load_file(str(micro["teachers"] / "init" / ADAPTER_WEIGHTS))
    a_keys = [k for k in init if "lora_A" in k]
    assert a_keys and all(init[k].abs().sum() > 0 for k in a_keys)
    assert all(init[k].abs().sum() == 0 for k in init if "lora_B" in k)  # PEFT's init: B = 0
    torch.manual_seed(12345)  # the shared init must not depend on the global RNG state at call time
    from llgbm.artifacts.adapters import shared_initialisation
    from llgbm.artifacts.base_model import load_base

    again = shared_initialisation(load_base(micro["base"]), micro["cfg"].lora, micro["cfg"].teachers.seed)
    assert all(torch.equal(again[k], init[k]) for k in init)


def _copy_adapter(micro, tmp_path):
    source = checkpoint_dirs(micro["teachers"])[0]
    target = tmp_path / "adapter"
    shutil.copytree(source, target)
    return target


def test_missing_adapter_file(micro, tmp_path) -> None:
    adapter = _copy_adapter(micro, tmp_path)
    (adapter / ADAPTER_WEIGHTS).unlink()
    layout = lora_layout(AutoConfig.from_pretrained(micro["base"]), micro["cfg"].lora)
    with pytest.raises(LlgbmError, match="adapter weights not found"):
        load_adapter_tensors(adapter, layout, micro["cfg"].lora)


def test_corrupt_adapter_file(micro, tmp_path) -> None:
    adapter = _copy_adapter(micro, tmp_path)
    (adapter / ADAPTER_WEIGHTS).write_bytes(b"\x00garbage" * 10)
    layout = lora_layout(AutoConfig.from_pretrained(micro["base"]), micro["cfg"].lora)
    with pytest.raises(LlgbmError, match=f"{ADAPTER_WEIGHTS}: cannot read adapter weights"):
        load_adapter_tensors(adapter, layout, micro["cfg"].lora)


def test_adapter_shapes_that_do_not_fit(micro, tmp_path) -> None:
    adapter = _copy_adapter(micro, tmp_path)
    state = load_file(str(adapter / ADAPTER_WEIGHTS))
    key = next(k for k in state if k.endswith("q_proj.lora_A.weight"))
    state[key] = torch.zeros(state[key].shape[0], state[key].shape[1] + 3)
    save_file(state, str(adapter / ADAPTER_WEIGHTS))
    layout = lora_layout(AutoConfig.from_pretrained(micro["base"]), micro["cfg"].lora)
    with pytest.raises(LlgbmError, match="the base model needs"):
        load_adapter_tensors(adapter, layout, micro["cfg"].lora)


def test_adapter_rank_differs_from_params(micro, tmp_path) -> None:
    adapter = _copy_adapter(micro, tmp_path)
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["r"] = 16
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    layout = lora_layout(AutoConfig.from_pretrained(micro["base"]), micro["cfg"].lora)
    with pytest.raises(LlgbmError, match="r is 16, params say 2"):
        load_adapter_tensors(adapter, layout, micro["cfg"].lora)


def test_saved_adapter_config_is_stable(micro) -> None:
    for directory in checkpoint_dirs(micro["teachers"]):
        config = json.loads((directory / "adapter_config.json").read_text())
        assert config["target_modules"] == sorted(micro["cfg"].lora.target_modules)
