"""From prompts to a PEFT adapter: the generator's forward, detokenised and saved with PEFT's API."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from llgbm.artifacts.base_model import load_tokenizer
from llgbm.artifacts.generator_files import is_llgbm_adapter, open_generator, read_generator_meta
from llgbm.data.encoder import FACTORS, EncoderConfig, encode, load_encoder
from llgbm.infra.errors import LlgbmError
from llgbm.infra.io import read_json, read_jsonl, read_text


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


def unknown_words(tokenizer: PreTrainedTokenizerBase, prompts: list[str]) -> list[str]:
    """The distinct whitespace-separated words a word-level tokenizer maps to its unknown token (case and
    attached punctuation count: 'Red' and 'blue,' are not 'red' and 'blue'); none for subword tokenizers."""
    if tokenizer.unk_token is None:
        return []
    words = dict.fromkeys(w for prompt in prompts for w in prompt.split())
    return [w for w in words if tokenizer.tokenize(w) == [tokenizer.unk_token]]


def generate_from_file(generator_dir: Path, prompts_file: Path, out_dir: Path, base_dir: Path | None = None,
                       force: bool = False) -> dict:
    """The `llgbm generate` command; returns the timings it prints. Every input is checked before
    anything is written, and out_dir is replaced only by a complete adapter."""
    check_out_dir(out_dir, force)
    prompts = read_prompts(prompts_file)
    needed = read_generator_meta(generator_dir)["shape"]["prompts"]  # before any model loads
    if len(prompts) < needed:
        raise LlgbmError(f"{prompts_file}: {len(prompts)} prompts, the generator reads {needed} of one task "
                         "(generator.prompts_per_sample)")
    loaded = open_generator(generator_dir, base_dir)
    if len(prompts) > needed:  # a note only once every input has passed: errors stay one line
        print(f"note: {prompts_file} has {len(prompts)} prompts; the generator reads the first {needed}",
              file=sys.stderr)
    unknown = unknown_words(load_tokenizer(loaded.base_dir), prompts[:needed])
    if unknown:
        print(f"note: {len(unknown)} words of the prompts are not in the base model's vocabulary and read as its "
              f"unknown token, e.g. {', '.join(repr(w) for w in unknown[:5])}", file=sys.stderr)
    if loaded.meta["encoder"] == FACTORS:
        raise LlgbmError(f"{generator_dir}: trained on the task's parts (encoder.model {FACTORS!r}, a study "
                         "reference), it reads no prompts")
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
