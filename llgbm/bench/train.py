"""`llgbm bench train`: seconds per optimizer step of the training recipe for each objective, the objectives
interleaved step by step (`bench.timing.interleaved`), each one's ratio to weight-only beside it.

A step is what the recipe's `_optimizer_step` does without accelerate: `recipes.train.training_step` with an
`Objective` built from params by `assembly.objective` (the arm's variant of them), the backward, clipping
and the optimizer step. The world is the embedded default's: params' tasks, their probes, answer prompts
and training records as the recipe builds them, on an untrained tiny base; random teacher checkpoints,
targets and prompt embeddings (the step's cost does not depend on their values). One process, CPU, fp32.
"""
from __future__ import annotations

import dataclasses
import platform
import tempfile
from itertools import count
from pathlib import Path
from typing import Callable

import torch

from llgbm.artifacts.base_model import load_base
from llgbm.assembly.deltas import define_deltas
from llgbm.assembly.objective import behaviour_term, objective
from llgbm.bench.timing import interleaved
from llgbm.bench.world import untrained_base
from llgbm.config import Config
from llgbm.core.delta import binned_log_probs
from llgbm.core.generator import LoraGenerator, generator_shape, start_at_mean
from llgbm.core.lora import layout_of_model, stack_adapters
from llgbm.core.weight_tokens import WeightTokenizer
from llgbm.data.batching import GeneratorDataset
from llgbm.data.probes import tokenize_probes
from llgbm.recipes.train import Objective, task_records, training_step
from llgbm.testing import random_adapter

WARMUP_STEPS = 5  # untimed steps of every objective first (allocators, the optimizer's state)
TASKS, CHECKPOINTS_PER_TASK, PROMPTS, EMBED_DIM = 6, 3, 256, 384  # 18 checkpoints; MiniLM's embedding width


def arm_configs(cfg: Config) -> dict[str, Config]:
    """Each objective's params: weight-only; the seed's delta; its per-probe and all-layer variants; the
    gradient-balanced sum; the KL reference; the task loss on behaviour_adapters items and on every item (as
    the study's SFT arms run it); and the task loss alone on every item (SFT-only, the default objective).
    lambda is max(lambda_delta, 1) from the first step (a constant schedule without warm-up: a step at
    lambda 0 skips the behaviour term's backward), the sum plain but in the grad_norm arm; the weight term
    at weight 1 throughout but in SFT-only, whatever params' default objective; fp32."""
    lam = max(cfg.lambda_delta, 1.0)
    train = dataclasses.replace(cfg.train, mixed_precision="no", lambda_warmup_steps=0, lambda_weights=1.0,
                                lambda_weights_decay_steps=0)
    base = dataclasses.replace(cfg, lambda_delta=lam, lambda_schedule="constant", loss_balance="none",
                               behaviour_loss="delta", delta_reduce="mean", delta_layers="last", train=train)

    def arm(**changes: object) -> Config:
        return dataclasses.replace(base, **changes)

    return {
        "weight_only": arm(lambda_delta=0.0, train=dataclasses.replace(train, behaviour_adapters=0)),
        "delta": arm(),
        "delta_per_probe": arm(delta_reduce="per_probe"),
        "delta_all_layers": arm(delta_layers="all"),
        "delta_grad_norm": arm(loss_balance="grad_norm"),
        "kl": arm(behaviour_loss="kl"),
        "sft": arm(behaviour_loss="sft"),
        "sft_every_item": arm(behaviour_loss="sft", train=dataclasses.replace(train, behaviour_adapters=train.batch_size)),
        "sft_only": arm(behaviour_loss="sft", train=dataclasses.replace(train, behaviour_adapters=train.batch_size,
                                                                         lambda_weights=0.0)),
    }


def bench_train(cfg: Config, steps: int) -> dict:
    """Median seconds per step of every objective over `steps` timed steps (after WARMUP_STEPS), one
    generator and optimizer stepped by every arm in turn, and each arm's ratio to weight-only."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        base_dir = Path(tmp) / "base"
        bench_cfg, tasks, tokenizer = untrained_base(cfg, base_dir, tiny=True)
        arms = arm_configs(bench_cfg)
        chosen = tasks[:TASKS]
        checkpoint_tasks = [t.name for t in chosen for _ in range(CHECKPOINTS_PER_TASK)]
        definitions = {name: define_deltas(arm, tasks, chosen, base_dir, tokenizer) for name, arm in arms.items()}
        base = load_base(base_dir, definitions["delta"].base_dtype, device="cpu")
    layout = layout_of_model(base, cfg.lora)
    probe_ids, probe_mask = tokenize_probes(definitions["delta"].probes, tokenizer)
    weight_tokenizer = WeightTokenizer(layout, cfg.generator.chunk_width)
    n = len(checkpoint_tasks)
    tokens, scales = weight_tokenizer.tokenize(stack_adapters([random_adapter(layout, generator) for _ in range(n)]))
    embeddings = torch.randn(PROMPTS, EMBED_DIM, generator=generator)
    model = LoraGenerator(generator_shape(cfg.generator, EMBED_DIM, weight_tokenizer.token_roles(), weight_tokenizer.token_columns(),
                                         weight_tokenizer.token_dim))
    start_at_mean(model, tokens, scales)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.learning_rate, weight_decay=cfg.train.weight_decay)
    streams = (torch.Generator().manual_seed(0), torch.Generator().manual_seed(1))
    records, record_rows = task_records(chosen, checkpoint_tasks, cfg.sft.records, tokenizer)

    def dataset(arm: Config, delta_shape: tuple[int, ...]) -> GeneratorDataset:
        extras = None
        if arm.behaviour_loss == "kl":  # each checkpoint's answer prompts and its teacher's distributions there
            answers = definitions["kl"].answers
            ids, mask = answers.batch(checkpoint_tasks, tokenizer)
            log_probs = torch.log_softmax(torch.randn(n, ids.shape[1], base.config.vocab_size, generator=generator), -1)
            extras = {"kl_ids": ids, "kl_mask": mask, "kl_target": log_probs}
            if answers.top_k:
                extras["kl_top_ids"] = log_probs.topk(answers.top_k, dim=-1).indices
                extras["kl_target"] = binned_log_probs(log_probs, extras["kl_top_ids"])
        sft = arm.behaviour_loss == "sft"
        return GeneratorDataset(tokens, scales, torch.randn(n, *delta_shape, generator=generator), [torch.arange(PROMPTS)] * n,
                                embeddings, cfg.generator.prompts_per_sample, [str(i) for i in range(n)], extras,
                                records if sft else None, record_rows if sft else None, cfg.sft.records if sft else 0)

    def step_of(arm: Config, goal: Objective, data: GeneratorDataset) -> Callable[[], None]:
        steps_taken = count(1)

        def step() -> None:
            metrics = training_step(model, data, weight_tokenizer, goal, arm.train.batch_size, streams,
                                    torch.device("cpu"), next(steps_taken))
            metrics["_loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), arm.train.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad()
            goal.loss.step()
        return step

    paths = {}
    for name, arm in arms.items():
        definition = definitions[name]
        adapters = arm.train.behaviour_adapters
        term = behaviour_term(arm, definition, base, layout, probe_ids, probe_mask) if adapters else None
        paths[name] = step_of(arm, Objective(objective(arm), term, adapters), dataset(arm, definition.delta_shape))
    seconds = {name: timing.seconds for name, timing in interleaved(paths, steps, warmup=WARMUP_STEPS).items()}
    return {"machine": {"platform": platform.platform(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__},
            "steps": steps, "warmup_steps": WARMUP_STEPS, "batch_size": cfg.train.batch_size,
            "behaviour_adapters": cfg.train.behaviour_adapters, "probes": len(definitions["delta"].probes.texts),
            "seconds_per_step": seconds,
            "over_weight_only": {name: value / seconds["weight_only"] for name, value in seconds.items()
                                 if name != "weight_only"}}
