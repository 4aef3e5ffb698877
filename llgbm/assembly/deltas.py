"""The delta definition, built once from params: the deltas stage, training, evaluation and the bench
measure deltas exactly as it says."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, PreTrainedTokenizerBase

from llgbm.artifacts.delta_cache import delta_definition
from llgbm.config import Config
from llgbm.core.delta import DeltaSpec, delta_spec
from llgbm.core.lora import lora_scaling
from llgbm.core.precision import autocast_dtype, frozen_base_dtype, resolve_mixed_precision
from llgbm.data.probes import AnswerPrompts, ProbeSet, answer_prompts, build_probe_set, generic_length
from llgbm.data.tasks import Task


@dataclass(frozen=True)
class DeltaDefinition:
    """Everything a delta depends on beyond its adapter and base model: which delta (`spec`), on which
    probes, in which precision and LoRA scaling, and the KL reference's answer prompts cached beside it."""
    spec: DeltaSpec
    probes: ProbeSet
    answers: AnswerPrompts
    precision: str  # train.mixed_precision resolved on this machine: the cache is computed in training's
    base_dtype: str  # the frozen base's dtype under that precision
    scaling: float
    hidden_size: int

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return autocast_dtype(self.precision)

    @property
    def delta_shape(self) -> tuple[int, ...]:
        return self.spec.shape(len(self.probes.texts), self.hidden_size)

    def cache_identity(self) -> dict:
        """What a delta cache records of it, and refuses to mix (`artifacts.delta_cache.delta_definition`)."""
        return delta_definition(self.base_dtype, self.precision, self.scaling, self.spec, self.answers)


def define_deltas(cfg: Config, tasks: list[Task], training: list[Task], base_dir: Path,
                  tokenizer: PreTrainedTokenizerBase) -> DeltaDefinition:
    """The delta definition params give for this base model; `training`: the tasks the probes draw on,
    `tasks`: every task (the KL reference's prompts)."""
    model_config = AutoConfig.from_pretrained(str(base_dir))
    precision = resolve_mixed_precision(cfg.train.mixed_precision)
    return DeltaDefinition(
        spec=delta_spec(cfg.delta_reduce, cfg.delta_layers, model_config.num_hidden_layers),
        probes=build_probe_set(cfg.probes, cfg.probe_count, training, generic_length(cfg.tasks), tokenizer),
        answers=answer_prompts(tasks, cfg.kl.prompts, cfg.kl.top_k, cfg.kl.seed),
        precision=precision, base_dtype=frozen_base_dtype(cfg.base.dtype, precision), scaling=lora_scaling(cfg.lora),
        hidden_size=model_config.hidden_size)
