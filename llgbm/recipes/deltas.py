"""The deltas recipe: the probe set, v(base) once, and the delta (and KL targets) of every teacher
checkpoint, cached under cache/deltas and reused where nothing that made an entry changed."""
from __future__ import annotations

import time
from pathlib import Path

import torch
from transformers import AutoConfig

from llgbm.artifacts.adapters import ADAPTER_WEIGHTS, load_adapter_tensors
from llgbm.artifacts.base_model import load_base, load_tokenizer
from llgbm.artifacts.delta_cache import ANSWERS, DeltaCache, base_fingerprint
from llgbm.artifacts.teacher_index import read_index
from llgbm.assembly.deltas import define_deltas
from llgbm.config import Config
from llgbm.core.delta import DeltaComputer, binned_log_probs
from llgbm.core.lora import lora_layout, stack_adapters
from llgbm.data.probes import tokenize_probes
from llgbm.data.split import Split
from llgbm.data.tasks import Task, load_tasks
from llgbm.infra.errors import LlgbmError
from llgbm.infra.io import sha256_file, write_json_atomic
from llgbm.infra.paths import BASE_DIR, DELTAS_DIR, RESULTS_DIR, SPLIT_FILE, TASKS_FILE, TEACHERS_DIR

RUN_FILE = "run.json"  # what one run of the stage did, beside its metrics (git-ignored, not a DVC output)
RUN_FACTS = ("computed", "reused", "seconds")


def fill_cache(cfg: Config, tasks: list[Task], training: list[Task], base_dir: Path, teachers_dir: Path,
               cache_dir: Path) -> dict:
    """Compute (or reuse) the delta of every teacher checkpoint; returns the stage's metrics and what this
    run did (RUN_FACTS: how many deltas it computed and reused, its wall seconds). `training`: the tasks
    whose probes the probe set draws on."""
    start = time.perf_counter()
    tokenizer = load_tokenizer(base_dir)
    definition = define_deltas(cfg, tasks, training, base_dir, tokenizer)
    probes, answers = definition.probes, definition.answers
    layout = lora_layout(AutoConfig.from_pretrained(str(base_dir)), cfg.lora)
    cache = DeltaCache.open(cache_dir, probes, base_fingerprint(base_dir), definition.delta_shape, definition.cache_identity())
    checkpoints = read_index(teachers_dir)
    for c in checkpoints:
        weights = Path(teachers_dir) / c["path"] / ADAPTER_WEIGHTS
        if not weights.is_file():
            raise LlgbmError(f"{weights}: adapter weights not found; rerun the teachers stage")
        c["adapter_sha256"] = sha256_file(weights)
        c["key"] = cache.key_for(c["adapter_sha256"])
    todo = [c for c in checkpoints if c["key"] not in cache]
    for c in todo:  # a damaged adapter stops the stage before anything is written
        load_adapter_tensors(Path(teachers_dir) / c["path"], layout, cfg.lora)
    cache.begin_writing()
    computer = DeltaComputer(load_base(base_dir, definition.base_dtype), layout, definition.scaling,
                             *tokenize_probes(probes, tokenizer), autocast_dtype=definition.autocast_dtype, spec=definition.spec)
    cache.save_base_state(computer.base_states)
    answers.save(Path(cache_dir) / ANSWERS)
    answer_ids, answer_mask = answers.batch([c["task"] for c in todo], tokenizer) if todo else (None, None)
    per_batch = cfg.deltas.adapters_per_batch
    device = computer.probe_ids.device
    for first in range(0, len(todo), per_batch):
        chunk = todo[first : first + per_batch]
        tensors = [load_adapter_tensors(Path(teachers_dir) / c["path"], layout, cfg.lora) for c in chunk]
        batch = {k: (a.to(device), b.to(device)) for k, (a, b) in stack_adapters(tensors).items()}
        ids, mask = answer_ids[first : first + per_batch], answer_mask[first : first + per_batch]
        with torch.no_grad():
            deltas = computer(batch).cpu()
            kl_log_probs = computer.answer_log_probs(batch, ids, mask).cpu()
        for c, delta, log_probs in zip(chunk, deltas, kl_log_probs):
            top_ids = log_probs.topk(answers.top_k, dim=-1).indices if answers.top_k else None
            target = log_probs if top_ids is None else binned_log_probs(log_probs, top_ids)
            cache.put(c["key"], delta, target, top_ids, {"task": c["task"], "step": c["step"], "adapter": c["path"],
                                                         "adapter_sha256": c["adapter_sha256"]})
        cache.flush()
    cache.prune({c["key"] for c in checkpoints})
    deltas = torch.stack([cache.get(c["key"]) for c in checkpoints])
    return {"checkpoints": len(checkpoints), "computed": len(todo), "reused": len(checkpoints) - len(todo),
            "probes": len(probes.texts), "seconds": time.perf_counter() - start,
            **delta_geometry(deltas, [c["task"] for c in checkpoints])}


def delta_geometry(deltas: torch.Tensor, tasks: list[str]) -> dict:
    """Mean delta norm, and mean cosine between checkpoints of the same task vs of different tasks: the
    deltas say something about behaviour only if the first clearly exceeds the second."""
    deltas = deltas.flatten(1)
    unit = torch.nn.functional.normalize(deltas, dim=-1)
    cosine = unit @ unit.T
    same = torch.tensor([[a == b for b in tasks] for a in tasks])
    off_diagonal = ~torch.eye(len(tasks), dtype=torch.bool)
    within, between = cosine[same & off_diagonal], cosine[~same]
    return {"delta_norm_mean": deltas.norm(dim=-1).mean().item(),
            "cosine_within_task": within.mean().item() if within.numel() else float("nan"),
            "cosine_between_tasks": between.mean().item() if between.numel() else float("nan")}


def run(cfg: Config) -> None:
    tasks = load_tasks(TASKS_FILE)
    metrics = fill_cache(cfg, tasks, Split.load(SPLIT_FILE).training_tasks(tasks), BASE_DIR, TEACHERS_DIR, DELTAS_DIR)
    # What this run did, beside the metrics and not among them: a DVC metric that differs between two runs
    # of the same inputs would change dvc.lock with nothing else changed.
    write_json_atomic(RESULTS_DIR / "deltas" / RUN_FILE, {key: metrics.pop(key) for key in RUN_FACTS})
    write_json_atomic(RESULTS_DIR / "deltas" / "metrics.json", metrics)
    print(metrics)
