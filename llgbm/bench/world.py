"""What the benches set up alike: params' tasks and an untrained base written by the base recipe."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from llgbm.artifacts.base_model import load_tokenizer
from llgbm.config import Config
from llgbm.data.tasks import Task, make_tasks, vocabulary
from llgbm.infra.paths import TASK_FILES_DIR
from llgbm.recipes.base import prepare_base


def untrained_base(cfg: Config, out_dir: Path, tiny: bool = False) -> tuple[Config, list[Task], PreTrainedTokenizerBase]:
    """(params with base.pretrain_steps 0, params' tasks, the tokenizer) with that base written to out_dir by
    `recipes.base.prepare_base`; with `tiny`, the embedded default's tiny model whatever base.model says.
    The benches time paths, not answers: an untrained base costs what a trained one does."""
    base = dataclasses.replace(cfg.base, pretrain_steps=0, **({"model": "tiny"} if tiny else {}))
    bench_cfg = dataclasses.replace(cfg, base=base)
    tasks = make_tasks(bench_cfg.tasks, TASK_FILES_DIR)
    prepare_base(base, vocabulary(tasks), [], Path(out_dir))
    return bench_cfg, tasks, load_tokenizer(out_dir)
