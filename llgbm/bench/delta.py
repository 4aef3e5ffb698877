"""`llgbm bench delta`: the batched delta (`core.delta.DeltaComputer`, the path training's behaviour term and
the deltas stage run) against the loop over adapters, the unfused LoRA product, PEFT and the base model
alone, at the embedded default's and Qwen2.5's shapes (random weights); and the deltas stage's own recipe
(`recipes.deltas.fill_cache`) against PEFT's loading of every adapter.

Every figure is a median of `repeats` timed calls after a warm-up, the compared paths interleaved
(`bench.timing.interleaved`), in one process.
"""
from __future__ import annotations

import contextlib
import copy
import platform
import tempfile
from itertools import count
from pathlib import Path
from typing import Callable

import torch
from transformers import PreTrainedModel

from llgbm.artifacts.adapters import save_adapter
from llgbm.artifacts.base_model import load_base
from llgbm.artifacts.teacher_index import write_index
from llgbm.assembly.deltas import define_deltas
from llgbm.bench.timing import interleaved
from llgbm.bench.world import untrained_base
from llgbm.config import Config
from llgbm.core.delta import DeltaComputer
from llgbm.core.lora import AdapterBatch, LoraConfig, layout_of_model, lora_scaling, stack_adapters
from llgbm.data.probes import tokenize_probes
from llgbm.recipes.deltas import fill_cache
from llgbm.testing import in_memory_peft_delta, peft_delta, random_adapter, random_model, random_probes, tiny_shape

QWEN25_05B = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                  num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True)
QWEN25_15B = dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                  num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True)
STAGE_ADAPTERS = 24  # the deltas-stage comparison's teacher checkpoints (three per batch of eight)


def linear_flops(model: PreTrainedModel, tokens: int, backward: bool) -> float:
    """2 x (decoder linear parameters) x tokens, doubled for the backward to the inputs: the base's own
    matrix products, the work any adapted forward must at least do (the LoRA adds ~2% at rank 16)."""
    params = sum(m.weight.numel() for name, m in model.named_modules()
                 if isinstance(m, torch.nn.Linear) and ".layers." in name)
    return 2.0 * params * tokens * (2 if backward else 1)


def matmul_peak_tflops(device: torch.device, dtype: torch.dtype, size: int, repeats: int) -> float:
    """Measured TFLOP/s of one size^3 matrix product in `dtype` on `device`: the ceiling the same run's
    figures are read against."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    return 2.0 * size**3 / interleaved({"matmul": lambda: a @ b}, repeats, device=device)["matmul"].seconds / 1e12


def _case(model: PreTrainedModel, name: str, n_adapters: int, probes: int, length: int, lora: LoraConfig,
          repeats: int, device: torch.device, autocast_dtype: torch.dtype | None,
          bf16_model: PreTrainedModel | None, with_peft: bool = True) -> list[dict]:
    generator = torch.Generator().manual_seed(n_adapters)
    layout = layout_of_model(model, lora)
    ids, mask = random_probes(model.config.vocab_size, probes, length, generator)
    ids, mask = ids.to(device), mask.to(device)
    adapters = [{k: (a.to(device), b.to(device)) for k, (a, b) in random_adapter(layout, generator).items()}
                for _ in range(n_adapters)]
    computers = {(checkpointing, fuse): DeltaComputer(model, layout, lora_scaling(lora), ids, mask, autocast_dtype=autocast_dtype,
                                                      gradient_checkpointing=checkpointing, fuse_shared_inputs=fuse)
                 for checkpointing in (False, True) for fuse in (True, False)}
    autocast = (lambda: torch.autocast(device.type, dtype=autocast_dtype)) if autocast_dtype else contextlib.nullcontext
    tokens = int(mask.sum()) * n_adapters
    stacked = stack_adapters(adapters)
    singles = [stack_adapters([a]) for a in adapters]
    rows = []
    for mode, checkpointing in (("forward", False), ("forward_backward", False), ("forward_backward", True)):
        backward = mode == "forward_backward"

        def leaves(batch: AdapterBatch) -> AdapterBatch:
            return {k: (a.clone().requires_grad_(backward), b.clone().requires_grad_(backward)) for k, (a, b) in batch.items()}

        def delta_of(batch: AdapterBatch, fuse: bool = True) -> None:
            with torch.set_grad_enabled(backward):
                delta = computers[checkpointing, fuse](leaves(batch))
                if backward:
                    delta.square().sum().backward()

        def plain(base: PreTrainedModel, precision: Callable[[], contextlib.AbstractContextManager]) -> None:
            # The base alone on the same rows, in the given precision: the floor of the adapted forward.
            with torch.set_grad_enabled(backward), precision():
                embeds = base.get_input_embeddings()(ids.repeat(n_adapters, 1)).detach().requires_grad_(backward)
                hidden = base.base_model(inputs_embeds=embeds, attention_mask=mask.repeat(n_adapters, 1)).last_hidden_state
                states = hidden[torch.arange(hidden.shape[0], device=device), mask.repeat(n_adapters, 1).sum(-1) - 1]
                if backward:
                    states.float().square().sum().backward()

        paths = {"batched": lambda: delta_of(stacked),
                 # The same batched path with one A product per module (core.lora's fusion off): what fusion saves.
                 "batched_unfused": lambda: delta_of(stacked, fuse=False),
                 "loop": lambda: [delta_of(s) for s in singles],
                 # The floor in the delta path's own precision (autocast where it runs under autocast).
                 "plain": lambda: plain(model, autocast)}
        if bf16_model is not None:
            paths["plain_bf16_weights"] = lambda: plain(bf16_model, contextlib.nullcontext)
        if mode == "forward" and with_peft:
            base_states = computers[False, True].base_states.cpu()
            paths["peft"] = lambda: [in_memory_peft_delta(model, a, layout, lora, ids, mask, base_states) for a in adapters]
        timed = interleaved(paths, repeats, device=device)
        row = {"model": name, "adapters": n_adapters, "probes": probes, "probe_length": length, "mode": mode,
               "gradient_checkpointing": checkpointing, "peft": None, "plain_bf16_weights": None,
               **{path: timing.seconds for path, timing in timed.items()},
               **{f"peak_gib_{path}": timed[path].peak_gib for path in ("batched", "loop", "plain")}}
        row["batched_over_plain"] = row["batched"] / row["plain"]
        row["batched_over_plain_bf16_weights"] = (row["batched"] / row["plain_bf16_weights"]
                                                  if row["plain_bf16_weights"] else None)
        row["loop_over_batched"] = row["loop"] / row["batched"]
        row["unfused_over_batched"] = row["batched_unfused"] / row["batched"]
        row["batched_tflops"] = linear_flops(model, tokens, backward) / row["batched"] / 1e12
        rows.append(row)
    return rows


def largest_fitting_adapters(model: PreTrainedModel, lora: LoraConfig, probes: int, length: int, device: torch.device,
                             autocast_dtype: torch.dtype | None, checkpointing: bool, limit: int) -> dict | None:
    """The most adapters whose batched delta forward+backward (`probes` x `length` tokens each, the adapters
    themselves and their gradients included) fits in this GPU's memory: doubling from 1, then bisection to
    within 1/8 of the answer; each try starts from an emptied cache. None off CUDA (a CPU has no such wall)."""
    if device.type != "cuda":
        return None
    layout = layout_of_model(model, lora)
    ids, mask = random_probes(model.config.vocab_size, probes, length, torch.Generator().manual_seed(0))
    computer = DeltaComputer(model, layout, lora_scaling(lora), ids, mask, autocast_dtype=autocast_dtype,
                             gradient_checkpointing=checkpointing)

    def fits(n: int) -> bool:
        try:
            batch = {s.name: (torch.randn(n, *s.a_shape, device=device).mul_(0.05).requires_grad_(),
                              torch.randn(n, *s.b_shape, device=device).mul_(0.05).requires_grad_()) for s in layout}
            computer(batch).square().sum().backward()
            torch.cuda.synchronize()
            return True
        except torch.cuda.OutOfMemoryError:
            return False
        finally:
            batch = None
            torch.cuda.empty_cache()

    fitting, limit_reached = largest_passing(fits, limit)
    return {"adapters": fitting, "limit_reached": limit_reached}


def largest_passing(passes: Callable[[int], bool], limit: int) -> tuple[int, bool]:
    """(n, limit reached) for a monotone `passes`: doubling from 1 while n <= limit, then bisection until the
    largest passing n found is within n // 8 (at least 1) of the smallest failing one."""
    passing, failing = 0, 1
    while failing <= limit and passes(failing):
        passing, failing = failing, failing * 2
    if failing > limit:
        return passing, True
    while failing - passing > max(1, passing // 8):
        middle = (passing + failing) // 2
        passing, failing = (middle, failing) if passes(middle) else (passing, middle)
    return passing, False


def bench_deltas_stage(cfg: Config, n_adapters: int, repeats: int) -> dict:
    """The deltas stage's recipe (`fill_cache` into an empty cache: base and adapters read from disk,
    batched, no_grad; the KL reference's answer distributions too) against the naive PEFT path (two fresh
    bases from disk and PeftModel.from_pretrained per adapter, on the same probes), on the embedded default's
    shape: an untrained base over params' tasks' vocabulary, random adapters indexed as teachers."""
    generator = torch.Generator().manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base_dir, teachers_dir = root / "base", root / "teachers"
        bench_cfg, tasks, tokenizer = untrained_base(cfg, base_dir, tiny=True)
        layout = layout_of_model(load_base(base_dir, device="cpu"), cfg.lora)
        index = []
        for i in range(n_adapters):
            task, step = tasks[i % len(tasks)].name, 1 + i // len(tasks)
            path = f"{task}/step-{step:05d}"
            save_adapter(load_base(base_dir, device="cpu"), random_adapter(layout, generator), layout, cfg.lora,
                         teachers_dir / path)
            index.append({"task": task, "step": step, "path": path})
        write_index(teachers_dir, index)
        definition = define_deltas(bench_cfg, tasks, tasks, base_dir, tokenizer)
        ids, mask = tokenize_probes(definition.probes, tokenizer)
        caches = count()
        timed = interleaved({
            "stage": lambda: fill_cache(bench_cfg, tasks, tasks, base_dir, teachers_dir, root / f"cache-{next(caches)}"),
            "peft": lambda: [peft_delta(base_dir, teachers_dir / c["path"], ids, mask, definition.spec, definition.base_dtype)
                             for c in index],
        }, repeats)
    stage, peft = timed["stage"].seconds, timed["peft"].seconds
    return {"model": "embedded-default", "adapters": n_adapters, "probes": len(definition.probes.texts),
            "stage": stage, "peft": peft, "peft_over_stage": peft / stage}


def bench_delta(cfg: Config, models: list[str], adapter_counts: list[int], repeats: int,
                probes: int | None, probe_length: int | None, device: str, dtype: str, fit_limit: int = 0,
                with_peft: bool = True, stage_adapters: int = STAGE_ADAPTERS) -> dict:
    """The cases of every model shape and adapter count; with fit_limit > 0 on a GPU, also the largest
    adapters per step that fit for each shape, with and without gradient checkpointing (searched up to
    fit_limit). Without with_peft, the PEFT column (a fresh PEFT model per adapter: slow at 1.5B) is null.
    With the embedded default among `models`, the deltas stage's recipe against PEFT on `stage_adapters`."""
    torch_device = torch.device(device)
    autocast_dtype = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    shapes = {
        "embedded-default": (tiny_shape(cfg.base.tiny), cfg.lora, probes or cfg.probe_count, probe_length or 12),
        "qwen2.5-0.5b": (QWEN25_05B, LoraConfig(rank=8, alpha=16.0), probes or 2, probe_length or 16),
        "qwen2.5-1.5b": (QWEN25_15B, LoraConfig(rank=16, alpha=32.0), probes or 8, probe_length or 128),
    }
    cases, fitting = [], {}
    for name in models:
        shape, lora, n_probes, length = shapes[name]
        model = random_model(shape).to(torch_device)
        if fit_limit > 0:
            fitting[name] = {key: largest_fitting_adapters(model, lora, n_probes, length, torch_device, autocast_dtype,
                                                           checkpointing, fit_limit)
                             for key, checkpointing in (("without_checkpointing", False), ("with_checkpointing", True))}
        # A bf16-weights copy of the base: the floor a bf16 run could reach with the frozen base in bf16.
        bf16_model = copy.deepcopy(model).to(torch.bfloat16) if autocast_dtype == torch.bfloat16 else None
        for n_adapters in adapter_counts:
            cases.extend(_case(model, name, n_adapters, n_probes, length, lora, repeats, torch_device, autocast_dtype,
                               bf16_model, with_peft))
        del model, bf16_model
    peak_dtype = autocast_dtype or torch.float32
    return {
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "torch_threads": torch.get_num_threads(), "device": str(torch_device),
                    "gpu": torch.cuda.get_device_name() if torch_device.type == "cuda" else None,
                    "dtype": dtype, "torch": torch.__version__},
        "repeats": repeats,
        # Measured in this run: what batched_tflops is read against (bf16 on a GPU, the run's dtype else).
        "matmul_peak_tflops": matmul_peak_tflops(torch_device, peak_dtype, 4096 if torch_device.type == "cuda" else 1024,
                                                 repeats),
        "matmul_peak_dtype": str(peak_dtype).removeprefix("torch."),
        "cases": cases,
        # Adapters x probes x probe length per training step that fit (CUDA only; null on CPU).
        "largest_fitting_adapters": fitting or None,
        "deltas_stage": bench_deltas_stage(cfg, stage_adapters, repeats) if "embedded-default" in models else None,
    }
