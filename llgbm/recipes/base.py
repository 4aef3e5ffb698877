"""The base recipe: the tiny Qwen2 built and pre-trained here on task-free text, or a hub model passed
through the same from_pretrained path every later stage uses; written to models/base."""
from __future__ import annotations

from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from llgbm.artifacts.base_model import (
    BaseConfig,
    build_tiny_model,
    build_tiny_tokenizer,
    load_base,
    load_tokenizer,
    make_tokenizer_auto_loadable,
)
from llgbm.config import Config
from llgbm.core.scoring import completion_batch
from llgbm.core.training import run_steps
from llgbm.data.tasks import load_tasks, pretraining_texts, vocabulary
from llgbm.infra.io import atomic_dir, write_json_atomic
from llgbm.infra.paths import BASE_DIR, RESULTS_DIR, TASKS_FILE


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

    def step_loss(step: int) -> torch.Tensor:
        batch = torch.randint(0, len(texts), (cfg.pretrain_batch_size,), generator=generator)
        return model(input_ids=ids[batch], attention_mask=mask[batch], labels=labels[batch]).loss

    model.train()
    losses = run_steps(optimizer, cfg.pretrain_steps, step_loss)
    model.eval()
    return losses


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


def run(cfg: Config) -> None:
    tasks = load_tasks(TASKS_FILE)
    texts = pretraining_texts(cfg.tasks, tasks, cfg.base.pretrain_texts, cfg.base.pretrain_primitive_share,
                              cfg.base.pretrain_composition_share)
    with atomic_dir(BASE_DIR) as out:
        metrics = prepare_base(cfg.base, vocabulary(tasks), texts, out)
    write_json_atomic(RESULTS_DIR / "base" / "metrics.json", metrics)
    print(metrics)
