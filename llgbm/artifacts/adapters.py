"""The boundary to PEFT: adapters are read and written only as standard PEFT directories, with PEFT's
own state-dict conversions, and loaded as a client would (`PeftModel.from_pretrained`)."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from safetensors import SafetensorError
from safetensors.torch import load_file
from transformers import PreTrainedModel

from llgbm.core.lora import LoraConfig, LoraSlot
from llgbm.infra.errors import LlgbmError
from llgbm.infra.io import read_json

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


def peft_config(lora: LoraConfig) -> PeftLoraConfig:
    return PeftLoraConfig(
        r=lora.rank, lora_alpha=lora.alpha, target_modules=list(lora.target_modules),
        lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
    )


def shared_initialisation(base: PreTrainedModel, lora: LoraConfig, seed: int) -> dict[str, torch.Tensor]:
    """PEFT's own LoRA initialisation drawn once from `seed`: every teacher starts from it, so A and B
    of different teachers live in one coordinate system (they are defined only up to r x r mixing)."""
    torch.manual_seed(seed)
    model = get_peft_model(base, peft_config(lora))
    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}


def read_adapter_config(adapter_dir: Path) -> dict:
    path = Path(adapter_dir) / ADAPTER_CONFIG
    config = read_json(path, "adapter config")
    if not isinstance(config, dict):
        raise LlgbmError(f"{path}: adapter config must be a JSON object")
    return config


def load_adapter_tensors(adapter_dir: Path, layout: list[LoraSlot], lora: LoraConfig) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Read a PEFT adapter directory as {slot name: (A, B)}, checked against the layout and LoRA config."""
    adapter_dir = Path(adapter_dir)
    config = read_adapter_config(adapter_dir)
    expected = {"r": lora.rank, "lora_alpha": lora.alpha}
    for key, value in expected.items():
        if config.get(key) != value:
            raise LlgbmError(f"{adapter_dir / ADAPTER_CONFIG}: {key} is {config.get(key)}, params say {value}")
    if config.get("use_rslora") or config.get("use_dora"):
        raise LlgbmError(f"{adapter_dir / ADAPTER_CONFIG}: rsLoRA and DoRA adapters are not supported")
    path = adapter_dir / ADAPTER_WEIGHTS
    if not path.is_file():
        raise LlgbmError(f"{path}: adapter weights not found")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise LlgbmError(f"{path}: cannot read adapter weights ({exc})") from None
    return from_peft_state_dict(state, layout, str(path))


def from_peft_state_dict(state: dict[str, torch.Tensor], layout: list[LoraSlot],
                         source: str = "adapter") -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """PEFT state-dict keys -> {slot name: (A, B)} in fp32, every key and shape checked against the layout."""
    tensors = {}
    for slot in layout:
        pair = []
        for key, shape in ((slot.peft_a_key, slot.a_shape), (slot.peft_b_key, slot.b_shape)):
            if key not in state:
                raise LlgbmError(f"{source}: missing tensor '{key}' required by the base model's layout")
            if tuple(state[key].shape) != shape:
                raise LlgbmError(
                    f"{source}: tensor '{key}' has shape {tuple(state[key].shape)}, the base model needs {shape}")
            pair.append(state[key].to(torch.float32, copy=True))  # not a view of a mapped file
        tensors[slot.name] = (pair[0], pair[1])
    extra = set(state) - {k for s in layout for k in (s.peft_a_key, s.peft_b_key)}
    if extra:
        raise LlgbmError(f"{source}: tensors the base model's layout does not have, e.g. '{sorted(extra)[0]}'")
    return tensors


def to_peft_state_dict(tensors: dict[str, tuple[torch.Tensor, torch.Tensor]], layout: list[LoraSlot]) -> dict[str, torch.Tensor]:
    state = {}
    for slot in layout:
        a, b = tensors[slot.name]
        state[slot.peft_a_key] = a.detach().contiguous()
        state[slot.peft_b_key] = b.detach().contiguous()
    return state


def save_peft_model(model: PeftModel, out_dir: Path) -> None:
    """PEFT's save_pretrained, with adapter_config.json's target_modules in sorted order: PEFT keeps them
    as a set, whose order changes between processes, and the file should not."""
    model.save_pretrained(str(out_dir))
    config_path = Path(out_dir) / ADAPTER_CONFIG
    config = json.loads(config_path.read_text())
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def save_adapter(base: PreTrainedModel, tensors: dict[str, tuple[torch.Tensor, torch.Tensor]],
                 layout: list[LoraSlot], lora: LoraConfig, out_dir: Path) -> PeftModel:
    """Write tensors as a PEFT directory through PEFT's own API and return the PEFT model that wrote
    them. `base` must be a fresh model: PEFT injects its layers into it."""
    model = get_peft_model(base, peft_config(lora))
    write_adapter(model, tensors, layout, out_dir)
    return model


def write_adapter(model: PeftModel, tensors: dict[str, tuple[torch.Tensor, torch.Tensor]],
                  layout: list[LoraSlot], out_dir: Path) -> None:
    """Load tensors into a PEFT model's adapter (replacing all of it) and save it through PEFT, so one
    PEFT model can write many adapters of one layout."""
    result = set_peft_model_state_dict(model, to_peft_state_dict(tensors, layout))
    if result.unexpected_keys:
        raise LlgbmError(f"{out_dir}: PEFT rejected tensors {result.unexpected_keys[:3]}")
    save_peft_model(model, out_dir)


def load_peft_model(base: PreTrainedModel, adapter_dir: Path) -> PeftModel:
    """The real client's path: `PeftModel.from_pretrained` on a fresh base model (PEFT injects its layers
    into `base`, so it must not be used for anything else), in eval mode."""
    return PeftModel.from_pretrained(base, str(adapter_dir)).eval()
