"""`llgbm bench evaluate`: the evaluate recipe's measurement of one task's adapters (`AdapterMeter`: accuracy
on its test records and deltas on two probe sets) through the batched hook path (all adapters in one batch)
against its PEFT oracle (each adapter loaded on a fresh base), interleaved (`bench.timing.interleaved`) in one
process, on params' base shape (untrained) with random adapters."""
from __future__ import annotations

import platform
import tempfile
from pathlib import Path

import torch

from llgbm.artifacts.adapters import save_adapter
from llgbm.artifacts.base_model import load_base
from llgbm.assembly.deltas import define_deltas
from llgbm.bench.timing import interleaved
from llgbm.bench.world import untrained_base
from llgbm.config import Config
from llgbm.core.lora import layout_of_model
from llgbm.data.probes import tokenize_probes
from llgbm.recipes.evaluate import AdapterMeter
from llgbm.testing import random_adapter, random_probes


def bench_evaluate(cfg: Config, n_adapters: int, repeats: int) -> dict:
    """Median seconds to measure `n_adapters` adapters on the first task: `AdapterMeter.measure` (batched)
    and `AdapterMeter.peft_measure` of each (PEFT), on the delta definition's probes (as the cache's) and
    evaluate.probe_count random probes (as the evaluation probes)."""
    generator = torch.Generator().manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bench_cfg, tasks, tokenizer = untrained_base(cfg, root / "base")
        layout = layout_of_model(load_base(root / "base", device="cpu"), cfg.lora)
        dirs = []
        for i in range(n_adapters):
            save_adapter(load_base(root / "base", device="cpu"), random_adapter(layout, generator), layout, cfg.lora,
                         root / f"adapter-{i}")
            dirs.append(root / f"adapter-{i}")
        definition = define_deltas(bench_cfg, tasks, tasks, root / "base", tokenizer)
        probes = {"train_probes": tokenize_probes(definition.probes, tokenizer),
                  "eval": random_probes(len(tokenizer), cfg.evaluate.probe_count, 12, generator)}
        meter = AdapterMeter(root / "base", bench_cfg.base.dtype, tokenizer, probes, definition.spec, cfg.lora)
        task = tasks[0]
        timed = interleaved({"batched": lambda: meter.measure(dirs, task),
                             "peft": lambda: [meter.peft_measure(d, task) for d in dirs]}, repeats)
    batched, peft = timed["batched"].seconds, timed["peft"].seconds
    return {"adapters": n_adapters, "test_records": len(task.test),
            "probes": [len(definition.probes.texts), cfg.evaluate.probe_count],
            "batched": batched, "peft": peft, "peft_over_batched": peft / batched,
            "torch_threads": torch.get_num_threads(), "machine": platform.machine()}
