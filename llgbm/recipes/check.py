"""The check recipe: every rule that can be decided before training, run first and cheaply.

params.yaml was loaded and validated already (unknown keys, types, choices, cross-key rules); here the
task files are read, the split is resolved against the real task names, and the LoRA targets are found
in the tiny base's architecture. Its one output never changes while params pass, so a fix reruns only
what the fixed params feed, and a failure stops `dvc repro` before any stage deletes an output.
"""
from __future__ import annotations

from llgbm.artifacts.base_model import build_tiny_model, build_tiny_tokenizer
from llgbm.config import Config, heldout_names
from llgbm.core.lora import layout_of_model
from llgbm.data.probes import evaluation_candidates
from llgbm.data.split import resolve_split
from llgbm.data.tasks import make_tasks, task_pairs, vocabulary
from llgbm.infra.errors import LlgbmError
from llgbm.infra.io import write_json_atomic
from llgbm.infra.paths import CHECKED_FILE, TASK_FILES_DIR


def run(cfg: Config) -> None:
    tasks = make_tasks(cfg.tasks, TASK_FILES_DIR)
    split = resolve_split(tasks, heldout_names(cfg, [t.name for t in tasks]), cfg.max_training_tasks,
                          task_pairs(cfg.tasks), cfg.tasks.seed, cfg.validation_tasks)
    evaluation_candidates(cfg.evaluate.probe_count, cfg.evaluate.probe_seed, tasks, list(split.heldout))
    short = [t.name for t in tasks if len(t.test) < cfg.generator.prompts_per_sample]
    if short:
        raise LlgbmError(f"generator.prompts_per_sample: {cfg.generator.prompts_per_sample} test prompts condition each "
                         f"evaluated adapter; tasks {short} have fewer")
    if cfg.base.model == "tiny":  # a hub model's architecture is read only when the base stage fetches it
        vocab_size = len(build_tiny_tokenizer(vocabulary(tasks)))
        layout_of_model(build_tiny_model(cfg.base, vocab_size, cfg.base.seed), cfg.lora)
    write_json_atomic(CHECKED_FILE, {"params": "checked"})
    print(f"params.yaml and {len(tasks)} tasks checked: {len(split.training)} training, {len(split.heldout)} held out")
