"""From prompts to a PEFT adapter: the generator's forward, detokenised and saved with PEFT's API."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig

from .config import LoraConfig
from .delta_cache import base_fingerprint
from .errors import LlgbmError
from .generator import LoraGenerator, load_generator
from .io import atomic_dir
from .lora import LoraSlot, lora_layout, save_adapter
from .models import load_base
from .weight_tokenizer import WeightTokenizer


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
        with atomic_dir(Path(out_dir)) as tmp:
            save_adapter(load_base(self.base_dir, device="cpu"), tensors, self.layout, self.lora, tmp)


def open_generator(generator_dir: Path, base_dir: Path | None = None) -> LoadedGenerator:
    """The trained generator and the base model it was trained for; a mismatch is an error."""
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


def read_prompts(path: Path) -> list[str]:
    """Prompts from .txt (one per line), .json (a list of strings or of {prompt} records) or .jsonl."""
    path = Path(path)
    if not path.is_file():
        raise LlgbmError(f"{path}: prompt file not found")
    text = path.read_text()
    try:
        if path.suffix == ".jsonl":
            items = [json.loads(line) for line in text.splitlines() if line.strip()]
        elif path.suffix == ".json":
            items = json.loads(text)
        else:
            items = [line for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise LlgbmError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(items, list):
        raise LlgbmError(f"{path}: expected a list of prompts")
    prompts = [item["prompt"] if isinstance(item, dict) and "prompt" in item else item for item in items]
    if not all(isinstance(p, str) for p in prompts):
        raise LlgbmError(f"{path}: every prompt must be a string or a record with a 'prompt' field")
    prompts = [p for p in prompts if p.strip()]
    if not prompts:
        raise LlgbmError(f"{path}: prompt file has no prompts")
    return prompts


def generate_from_file(generator_dir: Path, prompts_file: Path, out_dir: Path, base_dir: Path | None = None) -> dict:
    """The `llgbm generate` command; returns the timings it prints."""
    from .config import EncoderConfig
    from .encoder import encode, load_encoder

    prompts = read_prompts(prompts_file)
    loaded = open_generator(generator_dir, base_dir)
    if len(prompts) < loaded.prompts:
        raise LlgbmError(f"{prompts_file}: {len(prompts)} prompts, the generator takes {loaded.prompts}")
    encoder = load_encoder(EncoderConfig(model=loaded.meta["encoder"]))
    start = time.perf_counter()
    condition = encode(encoder, prompts[: loaded.prompts], batch_size=loaded.prompts)
    encoded = time.perf_counter()
    tensors = loaded.tensors(condition)
    generated = time.perf_counter()
    loaded.save(tensors, out_dir)
    saved = time.perf_counter()
    return {"prompts_used": loaded.prompts, "prompts_given": len(prompts), "encode_seconds": encoded - start,
            "generate_seconds": generated - encoded, "save_seconds": saved - generated, "total_seconds": saved - start}
