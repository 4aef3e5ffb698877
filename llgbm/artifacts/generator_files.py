"""A trained generator on disk (generator.safetensors and config.json: its shape and the run's metadata),
opened with the base model it was trained for, and the adapters it writes."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import AutoConfig

from llgbm.artifacts.adapters import ADAPTER_CONFIG, save_adapter
from llgbm.artifacts.base_model import load_base
from llgbm.artifacts.delta_cache import base_fingerprint
from llgbm.core.generator import GeneratorShape, LoraGenerator
from llgbm.core.lora import LoraConfig, LoraSlot, lora_layout
from llgbm.core.weight_tokens import WeightTokenizer
from llgbm.infra.errors import LlgbmError, first_line
from llgbm.infra.io import atomic_dir, read_json, write_json_atomic

GENERATOR_WEIGHTS = "generator.safetensors"
GENERATOR_CONFIG = "config.json"


def save_generator(model: LoraGenerator, meta: dict, out_dir: Path) -> None:
    """generator.safetensors and config.json (the shape under "shape", plus the caller's metadata), atomically."""
    with atomic_dir(out_dir) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp / GENERATOR_WEIGHTS))
        write_json_atomic(tmp / GENERATOR_CONFIG, {**meta, "shape": model.shape.to_dict()})


def load_generator(directory: Path) -> tuple[LoraGenerator, dict]:
    """A saved generator and its metadata; anything that is not one is an error naming the file."""
    directory = Path(directory)
    config_path, weights_path = directory / GENERATOR_CONFIG, directory / GENERATOR_WEIGHTS
    meta = read_json(config_path, "generator config")
    try:
        shape = GeneratorShape.from_dict(meta["shape"])
        shape.check()
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise LlgbmError(f"{config_path}: not a generator config (shape: {exc}); is {directory} a trained generator?") from None
    model = LoraGenerator(shape)
    if not weights_path.is_file():
        raise LlgbmError(f"{weights_path}: generator weights not found")
    try:
        model.load_state_dict(load_file(str(weights_path)))
    except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
        raise LlgbmError(f"{weights_path}: cannot load generator weights ({first_line(exc)})") from None
    return model.eval(), meta


# Written into every adapter llgbm generates, listing the files written with it: `--force` replaces a
# directory only if it holds exactly those files, so nothing a user put there is ever deleted.
ADAPTER_MARKER = "llgbm_adapter.json"


@dataclass
class LoadedGenerator:
    model: LoraGenerator
    meta: dict
    base_dir: Path
    lora: LoraConfig
    layout: list[LoraSlot]
    weight_tokenizer: WeightTokenizer

    @property
    def prompts(self) -> int:
        return self.meta["shape"]["prompts"]

    @torch.no_grad()
    def tensors(self, condition: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """condition (N, E) -> one adapter's {slot: (A, B)}."""
        tokens, scales = self.model(condition.unsqueeze(0))
        tokens = tokens * self.weight_tokenizer.mask
        return {k: (a[0], b[0]) for k, (a, b) in self.weight_tokenizer.detokenize(tokens, scales).items()}

    def save(self, tensors: dict[str, tuple[torch.Tensor, torch.Tensor]], out_dir: Path) -> None:
        """Write the adapter (PEFT format, plus the llgbm marker) to out_dir, replacing it atomically."""
        with atomic_dir(Path(out_dir)) as tmp:
            save_adapter(load_base(self.base_dir, device="cpu"), tensors, self.layout, self.lora, tmp)
            files = sorted(p.name for p in tmp.iterdir())
            write_json_atomic(tmp / ADAPTER_MARKER, {"written_by": "llgbm", "files": files,
                                                     "base_fingerprint": self.meta["base_fingerprint"]})


def is_llgbm_adapter(directory: Path) -> bool:
    """True if directory holds exactly the files of an adapter llgbm wrote (its marker lists them)."""
    try:
        marker = read_json(Path(directory) / ADAPTER_MARKER, "adapter marker")
    except LlgbmError:
        return False
    if not (isinstance(marker, dict) and marker.get("written_by") == "llgbm" and isinstance(marker.get("files"), list)):
        return False
    files = [f for f in marker["files"] if isinstance(f, str)]
    return sorted(p.name for p in Path(directory).iterdir()) == sorted({*files, ADAPTER_MARKER})


def _positive_ints(values: object) -> bool:
    return isinstance(values, list) and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values)


def check_generator_meta(meta: object, path: Path) -> None:
    """The keys of a generator's config.json that generation reads, each with its type."""
    if not isinstance(meta, dict):
        raise LlgbmError(f"{path}: generator config must be a JSON object; not a generator directory?")
    expected = {"shape": dict, "lora": dict, "chunk_width": int, "base_path": str, "base_fingerprint": str,
                "encoder": str}
    for key, kind in expected.items():
        if not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool):
            raise LlgbmError(f"{path}: key '{key}' is missing or not a {kind.__name__}; not a generator directory?")
    for section, cls in (("shape", GeneratorShape), ("lora", LoraConfig)):
        names = sorted(f.name for f in dataclasses.fields(cls))
        if sorted(meta[section]) != names:
            raise LlgbmError(f"{path}: key '{section}' must have exactly the keys {names}")
    shape, lora = meta["shape"], meta["lora"]
    try:
        GeneratorShape.from_dict(shape).check()
    except (TypeError, ValueError) as exc:
        raise LlgbmError(f"{path}: key 'shape' is not a generator's shape ({exc})") from None
    if not (_positive_ints([lora["rank"], meta["chunk_width"]]) and isinstance(lora["alpha"], (int, float))
            and isinstance(lora["target_modules"], list) and all(isinstance(m, str) for m in lora["target_modules"])):
        raise LlgbmError(f"{path}: key 'lora' or 'chunk_width' has a value of the wrong type")


def read_generator_meta(generator_dir: Path) -> dict:
    """A generator directory's config.json, checked, without loading any model (cheap: say what is wrong
    with the directory before anything heavy loads)."""
    generator_dir = Path(generator_dir)
    if not generator_dir.is_dir():
        raise LlgbmError(f"{generator_dir}: generator directory not found")
    if (generator_dir / ADAPTER_CONFIG).is_file() and not (generator_dir / GENERATOR_CONFIG).is_file():
        raise LlgbmError(f"{generator_dir}: this is a LoRA adapter, not a generator; pass the trained generator "
                         "(models/generator)")
    meta = read_json(generator_dir / GENERATOR_CONFIG, "generator config")
    check_generator_meta(meta, generator_dir / GENERATOR_CONFIG)
    return meta


def open_generator(generator_dir: Path, base_dir: Path | None = None) -> LoadedGenerator:
    """The trained generator and the base model it was trained for; a mismatch is an error."""
    generator_dir = Path(generator_dir)
    read_generator_meta(generator_dir)
    model, meta = load_generator(generator_dir)
    base_dir = Path(base_dir or meta["base_path"])
    if not (base_dir / "config.json").is_file():
        raise LlgbmError(f"{base_dir}: base model not found (the generator was trained on {meta['base_path']})")
    if base_fingerprint(base_dir) != meta["base_fingerprint"]:
        raise LlgbmError(f"{generator_dir}: generator was trained for another base model than {base_dir}")
    lora = LoraConfig(**meta["lora"])
    layout = lora_layout(AutoConfig.from_pretrained(str(base_dir)), lora)
    weight_tokenizer = WeightTokenizer(layout, meta["chunk_width"])
    if (weight_tokenizer.num_tokens, weight_tokenizer.token_dim) != (meta["shape"]["num_tokens"], meta["shape"]["token_dim"]):
        raise LlgbmError(f"{generator_dir}: generator's token grid does not fit the LoRA layout of {base_dir}")
    return LoadedGenerator(model, meta, base_dir, lora, layout, weight_tokenizer)
