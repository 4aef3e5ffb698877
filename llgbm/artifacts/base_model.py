"""Base language models: the tiny locally built Qwen2 of the embedded default, or any hub id / path.

Every consumer loads the base through `load_base`, a fresh `from_pretrained` each call, so no model
object is ever shared between two adapters (PEFT injects LoRA layers in place).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from llgbm.core.precision import compute_device
from llgbm.infra.errors import LlgbmError, first_line
from llgbm.infra.quiet import quiet_transformers

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
PAD, UNK, EOS = "<pad>", "<unk>", "<eos>"


@dataclass
class TinyModelConfig:
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 128


@dataclass
class BaseConfig:
    # "tiny" builds a small Qwen2 locally; anything else is a hub id or local path for from_pretrained.
    model: str = "tiny"
    seed: int = 0
    dtype: str = "float32"
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    # Language-model pre-training of the tiny base on task-free world text (never on answers).
    pretrain_steps: int = 300
    pretrain_batch_size: int = 64
    pretrain_learning_rate: float = 3e-3
    pretrain_texts: int = 4096  # size of the pre-training corpus
    # Compositional family only: share of the corpus that shows a primitive (a selector alone with its
    # answer, or a transform of a single item), never a composition; the rest is number-word text.
    pretrain_primitive_share: float = 0.0
    # Compositional family only, a positive control of composition: share of the corpus that shows a pair
    # with its cue in the prompt ("task: <selector> <transform> items: ... answer:" and its answer), every pair,
    # held-out ones included. The base then composes when told the cue, as a large model follows an
    # instruction, and an adapter only has to stand in for the cue the adapted model no longer reads.
    pretrain_composition_share: float = 0.0


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
