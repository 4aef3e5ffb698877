"""From prompts to a PEFT adapter: the generator's forward, detokenised and saved with PEFT's API."""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig

from .config import EncoderConfig, LoraConfig
from .delta_cache import base_fingerprint
from .encoder import encode, load_encoder
from .errors import LlgbmError
from .generator import GENERATOR_CONFIG, GeneratorShape, LoraGenerator, load_generator
from .io import atomic_dir, read_json, read_jsonl, read_text, write_json_atomic
from .lora import LoraSlot, lora_layout, save_adapter
from .models import load_base
from .weight_tokenizer import WeightTokenizer

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


def check_out_dir(out_dir: Path, force: bool) -> None:
    """Refuse an output directory whose replacement would delete what llgbm did not write: the working
    directory or a parent of it (always), anything that is not a directory, a non-empty directory that
    is not an llgbm adapter, and an llgbm adapter unless `force`."""
    out = Path(out_dir)
    cwd = Path.cwd().resolve()
    if out.resolve() == cwd or out.resolve() in cwd.parents:
        raise LlgbmError(f"{out}: --out is the working directory or one of its parents; name a new directory")
    if out.is_symlink():
        raise LlgbmError(f"{out}: --out is a symbolic link; name a directory")
    ancestor = next(p for p in out.absolute().parents if p.exists())
    if not ancestor.is_dir():
        raise LlgbmError(f"{out}: {ancestor} is not a directory")
    if not out.exists():
        return
    if not out.is_dir():
        raise LlgbmError(f"{out}: --out exists and is not a directory")
    if not any(out.iterdir()):
        return
    if not is_llgbm_adapter(out):
        raise LlgbmError(f"{out}: --out is not empty and is not an adapter written by llgbm; "
                         "name a new or empty directory")
    if not force:
        raise LlgbmError(f"{out}: --out holds an adapter written by llgbm; pass --force to replace it")


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
    if not (_positive_ints([v for k, v in shape.items() if k != "channels"]) and _positive_ints(shape["channels"])):
        raise LlgbmError(f"{path}: key 'shape' must hold positive integers (channels: a list of them)")
    if not (_positive_ints([lora["rank"], meta["chunk_width"]]) and isinstance(lora["alpha"], (int, float))
            and isinstance(lora["target_modules"], list) and all(isinstance(m, str) for m in lora["target_modules"])):
        raise LlgbmError(f"{path}: key 'lora' or 'chunk_width' has a value of the wrong type")


def open_generator(generator_dir: Path, base_dir: Path | None = None) -> LoadedGenerator:
    """The trained generator and the base model it was trained for; a mismatch is an error."""
    generator_dir = Path(generator_dir)
    if not generator_dir.is_dir():
        raise LlgbmError(f"{generator_dir}: generator directory not found")
    check_generator_meta(read_json(generator_dir / GENERATOR_CONFIG, "generator config"),
                         generator_dir / GENERATOR_CONFIG)
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
    """Prompts from .txt (one per line), .json (a list of strings or of {prompt} records) or .jsonl (one
    string or {prompt} record per line)."""
    path = Path(path)
    if path.suffix == ".jsonl":
        items = read_jsonl(path, "prompt file")
    elif path.suffix == ".json":
        items = read_json(path, "prompt file")
    else:
        items = read_text(path, "prompt file").splitlines()
    if not isinstance(items, list):
        raise LlgbmError(f"{path}: expected a list of prompts, got a JSON {type(items).__name__}")
    where = "line" if path.suffix == ".jsonl" else "item"
    prompts = []
    for index, item in enumerate(items):
        prompt = item.get("prompt") if isinstance(item, dict) else item
        if not isinstance(prompt, str):
            raise LlgbmError(f"{path}: {where} {index + 1 if where == 'line' else index} must be a string or a "
                             "record with a string 'prompt' field")
        if prompt.strip():
            prompts.append(prompt)
    if not prompts:
        raise LlgbmError(f"{path}: prompt file has no prompts")
    return prompts


def generate_from_file(generator_dir: Path, prompts_file: Path, out_dir: Path, base_dir: Path | None = None,
                       force: bool = False) -> dict:
    """The `llgbm generate` command; returns the timings it prints. Every input is checked before
    anything is written, and out_dir is replaced only by a complete adapter."""
    check_out_dir(out_dir, force)
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
    check_out_dir(out_dir, force)  # again: it may have changed while the model ran
    try:
        loaded.save(tensors, out_dir)
    except OSError as exc:
        raise LlgbmError(f"{out_dir}: cannot write the adapter ({exc})") from None
    saved = time.perf_counter()
    return {"prompts_used": loaded.prompts, "prompts_given": len(prompts), "encode_seconds": encoded - start,
            "generate_seconds": generated - encoded, "save_seconds": saved - generated, "total_seconds": saved - start}
