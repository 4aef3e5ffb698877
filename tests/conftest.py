"""Shared micro configuration: three small tasks, a 2-layer base of width 32, short teacher runs."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from llgbm.config import Config, config_from_dict  # noqa: E402
from llgbm.data.probes import ProbeSet, build_probe_set, generic_length  # noqa: E402
from llgbm.data.split import Split, resolve_split  # noqa: E402
from llgbm.data.tasks import task_pairs  # noqa: E402

MICRO_PARAMS = {
    "probe_count": 4,
    "heldout_tasks": ["largest"],
    "tasks": {"names": ["first", "last", "largest"], "train_per_task": 64, "test_per_task": 30},
    "base": {"tiny": {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "num_kv_heads": 1,
                      "intermediate_size": 64}, "pretrain_steps": 20},
    "lora": {"rank": 2, "alpha": 4.0},
    "teachers": {"steps": 30, "batch_size": 16, "checkpoints_per_task": 2, "checkpoint_interval": 10,
                 "min_accuracy": 0.0},
    "diagnostics": {"multitask_steps": 40, "multitask_batch_size": 16},
    "generator": {"chunk_width": 16, "prompts_per_sample": 4, "feature_dim": 32, "channels": [8]},
    "train": {"steps": 40, "batch_size": 4, "behaviour_adapters": 2, "learning_rate": 0.003, "warmup_steps": 5,
              "lambda_warmup_steps": 10, "save_interval": 10, "log_interval": 5},
}


# The micro world's session fixtures: a test that uses one (directly or through another fixture) trains
# models, so it is an integration test; a test marked e2e runs subprocesses; a test (or module) marked
# integration keeps that mark (it trains or runs a pipeline without these fixtures); every other test is a
# unit test, and trains nothing: one that needs a base model and adapters takes `random_base`.
MICRO_FIXTURES = {"micro", "micro_train_inputs", "micro_generator"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("e2e") or item.get_closest_marker("integration"):
            continue  # an explicit mark wins over the default
        fixtures = set(getattr(item, "fixturenames", ()))
        item.add_marker(pytest.mark.integration if fixtures & MICRO_FIXTURES else pytest.mark.unit)


def tiny_random_model(cfg: Config | None = None, seed: int = 0):
    """A Qwen2 causal LM of the micro base's shape (vocabulary 32), randomly initialised with `seed`, in eval
    mode and frozen: nothing trained."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tiny = (cfg or micro_config()).base.tiny
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=32, hidden_size=tiny.hidden_size, intermediate_size=tiny.intermediate_size,
                                         num_hidden_layers=tiny.num_layers, num_attention_heads=tiny.num_heads,
                                         num_key_value_heads=tiny.num_kv_heads, tie_word_embeddings=True)).eval()
    model.requires_grad_(False)
    return model


@pytest.fixture(scope="session")
def random_base(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny random base (tiny_random_model, saved in from_pretrained format), four random adapters of the
    micro LoRA config saved through PEFT, and right-padded random probes of unequal length: what the tests of
    the LoRA, delta and weight-token code need instead of the micro world's trained base and teachers."""
    import torch

    from llgbm.artifacts.adapters import save_adapter, write_adapter
    from llgbm.artifacts.base_model import load_base
    from llgbm.core.lora import layout_of_model

    cfg = micro_config()
    root = tmp_path_factory.mktemp("random-base")
    tiny_random_model(cfg).save_pretrained(root / "base")
    layout = layout_of_model(load_base(root / "base"), cfg.lora)
    generator = torch.Generator().manual_seed(0)
    adapters, writer = [], None
    for k in range(4):  # LoRA updates about the size of the base's own weights (std 0.02)
        tensors = {s.name: (torch.randn(s.a_shape, generator=generator) * 0.1, torch.randn(s.b_shape, generator=generator) * 0.1)
                   for s in layout}
        if writer is None:
            writer = save_adapter(load_base(root / "base"), tensors, layout, cfg.lora, root / f"adapter-{k}")
        else:
            write_adapter(writer, tensors, layout, root / f"adapter-{k}")
        adapters.append(root / f"adapter-{k}")
    lengths = torch.tensor([10, 9, 8, 10, 7, 9])
    mask = (torch.arange(10)[None] < lengths[:, None]).long()
    ids = torch.randint(3, 32, (len(lengths), 10), generator=generator) * mask
    return {"cfg": cfg, "base": root / "base", "adapters": adapters, "layout": layout, "probe_ids": ids, "probe_mask": mask}


def micro_split(cfg: Config, tasks: list) -> Split:
    """The split the split stage resolves for `cfg`."""
    return resolve_split(tasks, cfg.heldout_tasks, cfg.max_training_tasks, task_pairs(cfg.tasks), cfg.tasks.seed,
                         cfg.validation_tasks)


def micro_training(cfg: Config, tasks: list) -> list:
    return micro_split(cfg, tasks).training_tasks(tasks)


def micro_config(**overrides: object) -> Config:
    raw = yaml.safe_load(yaml.safe_dump(MICRO_PARAMS))
    raw.update(overrides)
    return config_from_dict(raw, "micro params")


@pytest.fixture(scope="session")
def micro(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """tasks, base model and teacher checkpoints of the micro configuration, built once per session."""
    from llgbm.data.tasks import make_tasks, pretraining_texts, vocabulary
    from llgbm.infra.paths import TASK_FILES_DIR
    from llgbm.recipes.base import prepare_base
    from llgbm.recipes.teachers import train_all_teachers

    root = tmp_path_factory.mktemp("micro")
    cfg = micro_config()
    tasks = make_tasks(cfg.tasks, TASK_FILES_DIR)
    texts = pretraining_texts(cfg.tasks, tasks, cfg.base.pretrain_texts, cfg.base.pretrain_primitive_share)
    prepare_base(cfg.base, vocabulary(tasks), texts, root / "base")
    micro_split(cfg, tasks).save(root / "split.json")
    summary = train_all_teachers(root / "base", tasks, cfg, root / "teachers")
    return {"cfg": cfg, "tasks": tasks, "base": root / "base", "teachers": root / "teachers",
            "summary": summary, "root": root, "split": root / "split.json"}


@pytest.fixture(scope="session")
def micro_train_inputs(micro: dict) -> dict:
    """The micro world plus its delta cache and (real, offline) prompt embeddings."""
    from llgbm.data.encoder import embed_prompts
    from llgbm.recipes.deltas import fill_cache

    root = micro["root"]
    fill_cache(micro["cfg"], micro["tasks"], micro_training(micro["cfg"], micro["tasks"]),
               micro["base"], micro["teachers"], root / "deltas")
    prompts = [r.prompt for t in micro["tasks"] for r in (*t.train, *t.test)]
    embed_prompts(micro["cfg"].encoder, prompts).save(root / "embeddings")
    return {**micro, "deltas": root / "deltas", "embeddings": root / "embeddings"}


def micro_probe_set(cfg: Config, tasks: list, tokenizer) -> ProbeSet:
    """The probe set the deltas stage builds for `cfg`."""
    return build_probe_set(cfg.probes, cfg.probe_count, micro_split(cfg, tasks).training_tasks(tasks),
                           generic_length(cfg.tasks), tokenizer)


def checkpoint_dirs(teachers: Path) -> list[Path]:
    return sorted(p.parent for p in teachers.glob("*/step-*/adapter_model.safetensors"))


@pytest.fixture(scope="session")
def micro_generator(micro_train_inputs: dict) -> dict:
    """A generator trained for the micro configuration's 40 steps."""
    from llgbm.infra.paths import Paths
    from llgbm.recipes.train import train_generator

    run = micro_train_inputs["root"] / "run"
    paths = Paths(split=micro_train_inputs["split"], base=micro_train_inputs["base"], teachers=micro_train_inputs["teachers"],
                  deltas=micro_train_inputs["deltas"], embeddings=micro_train_inputs["embeddings"],
                  generator=run / "generator", checkpoints=run / "checkpoints", live=run / "live")
    train_generator(micro_train_inputs["cfg"], micro_train_inputs["tasks"], paths)
    return {**micro_train_inputs, "paths": paths, "generator": paths.generator}
