"""Base language models: the tiny locally built Qwen2 of the embedded default, or any hub id / path.

Every consumer loads the base through `load_base`, a fresh `from_pretrained` each call, so no model
object is ever shared between two adapters (PEFT injects LoRA layers in place).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from accelerate import PartialState
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase, PreTrainedTokenizerFast,
                          Qwen2Config, Qwen2ForCausalLM)
from transformers.utils import logging

from .config import BaseConfig
from .data import completion_batch
from .errors import LlgbmError, first_line

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
PAD, UNK, EOS = "<pad>", "<unk>", "<eos>"


def build_tiny_tokenizer(words: list[str]) -> PreTrainedTokenizerBase:
    """A word-level tokenizer over the task world's vocabulary, saved and loaded like any HF tokenizer."""
    vocab = {token: i for i, token in enumerate([PAD, UNK, EOS, *words])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token=PAD, unk_token=UNK, eos_token=EOS)


# AutoTokenizer picks the tokenizer class from config.json's model_type before tokenizer_config.json's
# tokenizer_class, and for qwen2 rebuilds a byte-level BPE from tokenizer.json's vocab and merges:
# the tiny model's word-level tokenizer came back turning every text into zero tokens. An `auto_map`
# entry turns that override off; AutoTokenizer then loads the fast tokenizer class named in
# tokenizer_config.json (and, under trust_remote_code=True, the same class through the module below),
# so every way of loading reads tokenizer.json as written.
TINY_TOKENIZER_MODULE = "tokenization_llgbm"
TINY_TOKENIZER_CLASS = "WordLevelTokenizer"
TINY_TOKENIZER_SOURCE = f'''"""The word-level tokenizer of an llgbm tiny base: tokenizer.json, read as written."""
from transformers import PreTrainedTokenizerFast


class {TINY_TOKENIZER_CLASS}(PreTrainedTokenizerFast):
    pass
'''


def make_tokenizer_auto_loadable(directory: Path) -> None:
    """Point tokenizer_config.json at the fast-tokenizer class, so AutoTokenizer reads tokenizer.json."""
    path = Path(directory) / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config["auto_map"] = {"AutoTokenizer": [None, f"{TINY_TOKENIZER_MODULE}.{TINY_TOKENIZER_CLASS}"]}
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (Path(directory) / f"{TINY_TOKENIZER_MODULE}.py").write_text(TINY_TOKENIZER_SOURCE)


def build_tiny_model(cfg: BaseConfig, vocab_size: int, seed: int) -> PreTrainedModel:
    tiny = cfg.tiny
    config = Qwen2Config(
        vocab_size=vocab_size, hidden_size=tiny.hidden_size, intermediate_size=tiny.intermediate_size,
        num_hidden_layers=tiny.num_layers, num_attention_heads=tiny.num_heads,
        num_key_value_heads=tiny.num_kv_heads, max_position_embeddings=128, tie_word_embeddings=True,
        pad_token_id=0, eos_token_id=2, bos_token_id=2,
    )
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(config)


def pretrain_tiny(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: list[tuple[str, str]],
                  cfg: BaseConfig, seed: int) -> list[float]:
    """Next-token pre-training on (context, scored text) pairs, the loss on the scored text only;
    returns the loss curve."""
    if cfg.pretrain_steps == 0:
        return []
    generator = torch.Generator().manual_seed(seed)
    encoded = completion_batch(tokenizer, texts)
    ids, mask, labels = encoded["input_ids"], encoded["attention_mask"], encoded["labels"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.pretrain_learning_rate, weight_decay=0.0)
    model.train()
    losses = []
    for _ in range(cfg.pretrain_steps):
        batch = torch.randint(0, len(texts), (cfg.pretrain_batch_size,), generator=generator)
        loss = model(input_ids=ids[batch], attention_mask=mask[batch], labels=labels[batch]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    return losses


def quiet_transformers() -> None:
    logging.disable_progress_bar()
    logging.set_verbosity_error()


def compute_device() -> torch.device:
    """The device accelerate assigns this process: a GPU where there is one (per rank under
    `accelerate launch`), else the CPU."""
    # Without CUDA, processes started by `accelerate launch` run on CPU over gloo.
    return PartialState(cpu=not torch.cuda.is_available()).device


def resolve_mixed_precision(setting: str) -> str:
    """train.mixed_precision as run here: "auto" is bf16 on a GPU that supports it, else "no"."""
    if setting == "auto":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    return setting


def autocast_dtype(mixed_precision: str) -> torch.dtype | None:
    """The autocast dtype of a resolved mixed-precision setting (None: full precision)."""
    return torch.bfloat16 if mixed_precision == "bf16" else None


def load_base(path: str | Path, dtype: str = "float32", device: str | torch.device | None = None) -> PreTrainedModel:
    """A fresh, frozen copy of the base model, on `device` (default: compute_device())."""
    quiet_transformers()
    device = compute_device() if device is None else device
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=DTYPES[dtype])
    except OSError as exc:
        raise LlgbmError(f"{path}: cannot load base model ({first_line(exc)})") from None
    model.to(device).eval()
    model.requires_grad_(False)
    return model


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    # The fast-tokenizer class reads any model's tokenizer.json as written (AutoTokenizer gives the same
    # ids on the tiny base, see make_tokenizer_auto_loadable; tested).
    try:
        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(path))
    except OSError as exc:
        raise LlgbmError(f"{path}: cannot load tokenizer ({first_line(exc)})") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # Right padding: a sequence's last real token sits at (length - 1), and causal attention keeps
    # padding from reaching it.
    tokenizer.padding_side = "right"
    return tokenizer


def prepare_base(cfg: BaseConfig, tokenizer_words: list[str], pretraining_texts: list[tuple[str, str]],
                 out_dir: Path) -> dict:
    """Write the base model and tokenizer to out_dir: the tiny model built (and pre-trained) here, or a
    hub id / local path passed through the same from_pretrained path every later stage uses."""
    if cfg.model == "tiny":
        tokenizer = build_tiny_tokenizer(tokenizer_words)
        tokenizer.padding_side = "right"
        model = build_tiny_model(cfg, len(tokenizer), cfg.seed)
        losses = pretrain_tiny(model, tokenizer, pretraining_texts, cfg, cfg.seed)
    else:
        tokenizer, model, losses = load_tokenizer(cfg.model), load_base(cfg.model, cfg.dtype, device="cpu"), []
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    if cfg.model == "tiny":
        make_tokenizer_auto_loadable(out_dir)
    metrics = {"parameters": sum(p.numel() for p in model.parameters())}
    if losses:
        metrics.update(pretrain_loss_first=losses[0], pretrain_loss_final=sum(losses[-10:]) / len(losses[-10:]))
    return metrics
