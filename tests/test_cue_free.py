"""The cue-free testbed (tasks.cue: generator), end to end on the micro configuration: the adapted model
never reads the cue (every input of the base, whoever runs it, is scanned), the generator always does."""
from __future__ import annotations

import pytest
import torch
from transformers.models.qwen2 import modeling_qwen2

from llgbm.artifacts.base_model import load_tokenizer
from llgbm.data.encoder import embed_prompts
from llgbm.data.tasks import make_tasks, pretraining_texts, vocabulary
from llgbm.infra.paths import TASK_FILES_DIR, Paths
from llgbm.recipes.base import prepare_base
from llgbm.recipes.deltas import fill_cache
from llgbm.recipes.evaluate import run_evaluation
from llgbm.recipes.teachers import train_all_teachers
from llgbm.recipes.train import train_generator

from .conftest import micro_config, micro_split

pytestmark = pytest.mark.integration


def test_cue_free_run_keeps_the_cue_from_the_adapted_model_and_gives_it_to_the_generator(tmp_path, monkeypatch) -> None:
    train = {**micro_config().train.__dict__, "steps": 6, "save_interval": 100, "lambda_warmup_steps": 2}
    cfg = micro_config(tasks={**micro_config().tasks.__dict__, "cue": "generator"}, behaviour_loss="sft",
                       train=train)
    tasks = make_tasks(cfg.tasks, TASK_FILES_DIR)
    prepare_base(cfg.base, vocabulary(tasks), pretraining_texts(cfg.tasks, tasks, cfg.base.pretrain_texts,
                                                                cfg.base.pretrain_primitive_share), tmp_path / "base")
    cue_id = load_tokenizer(tmp_path / "base").convert_tokens_to_ids("task:")
    seen: list[torch.Tensor] = []
    forward = modeling_qwen2.Qwen2Model.forward

    def recording(self, input_ids=None, *args, **kwargs):
        seen.append(input_ids.detach().cpu())
        return forward(self, input_ids, *args, **kwargs)

    monkeypatch.setattr(modeling_qwen2.Qwen2Model, "forward", recording)
    split = micro_split(cfg, tasks)
    split.save(tmp_path / "split.json")
    training = split.training_tasks(tasks)
    train_all_teachers(tmp_path / "base", tasks, cfg, tmp_path / "teachers")
    fill_cache(cfg, tasks, training, tmp_path / "base", tmp_path / "teachers", tmp_path / "deltas")
    conditions = [r.condition for t in tasks for r in (*t.train, *t.test)]
    embed_prompts(cfg.encoder, conditions).save(tmp_path / "embeddings")
    paths = Paths(split=tmp_path / "split.json", base=tmp_path / "base", teachers=tmp_path / "teachers",
                  deltas=tmp_path / "deltas", embeddings=tmp_path / "embeddings", generator=tmp_path / "generator",
                  checkpoints=tmp_path / "checkpoints", live=tmp_path / "live")
    train_generator(cfg, tasks, paths)
    summary, _ = run_evaluation(cfg, tasks, paths, tmp_path / "evaluation", 1)

    assert len(seen) > 50 and all(not (ids == cue_id).any() for ids in seen)  # teachers, deltas, SFT, evaluation
    assert all(c.startswith("task: ") for c in conditions)  # what the generator was conditioned on
    assert summary["heldout"]["tasks"] == 1
