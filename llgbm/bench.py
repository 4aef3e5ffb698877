"""`llgbm bench delta`: the batched delta against the naive ways and the base-model floor, side by side;
`llgbm bench teachers`: teachers trained together against one after another.

All figures are median wall seconds over `repeats` runs after one warm-up, measured in one process.
"""
from __future__ import annotations

import contextlib
import copy
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
from peft import get_peft_model, set_peft_model_state_dict
from transformers import PreTrainedModel, Qwen2Config, Qwen2ForCausalLM

from llgbm.artifacts.adapters import (
    load_adapter_tensors,
    load_peft_model,
    peft_config,
    shared_initialisation,
    to_peft_state_dict,
)
from llgbm.artifacts.base_model import load_base, load_tokenizer
from llgbm.config import Config
from llgbm.core.delta import DeltaComputer, DeltaSpec, probe_states, reduce_delta
from llgbm.core.generator import LoraGenerator, generator_shape, start_at_mean
from llgbm.core.lora import AdapterBatch, LoraConfig, LoraSlot, layout_of_model, lora_scaling, stack_adapters
from llgbm.core.losses import MultiTaskLoss
from llgbm.core.weight_tokens import WeightTokenizer
from llgbm.data.batching import GeneratorDataset
from llgbm.data.tasks import make_tasks, pretraining_texts, vocabulary
from llgbm.infra.paths import TASK_FILES_DIR
from llgbm.recipes.base import prepare_base
from llgbm.recipes.teachers import train_teacher, train_teachers_together
from llgbm.recipes.train import training_step

QWEN25_05B = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                  num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True)
QWEN25_15B = dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                  num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True)


def tiny_shape(cfg: Config) -> dict:
    """The embedded default's base-model shape (vocabulary size does not matter for timing)."""
    tiny = cfg.base.tiny
    return dict(vocab_size=32, hidden_size=tiny.hidden_size, intermediate_size=tiny.intermediate_size,
                num_hidden_layers=tiny.num_layers, num_attention_heads=tiny.num_heads,
                num_key_value_heads=tiny.num_kv_heads, tie_word_embeddings=True)


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def random_model(shape: dict, seed: int = 0) -> PreTrainedModel:
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(Qwen2Config(**shape)).eval()
    model.requires_grad_(False)
    return model


def random_adapter(layout: list[LoraSlot], generator: torch.Generator) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {s.name: (torch.randn(s.a_shape, generator=generator) * 0.05, torch.randn(s.b_shape, generator=generator) * 0.05)
            for s in layout}


def random_records(vocab: int, count: int, length: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Right-padded records of unequal length (as random_probes) whose last two real tokens are the answer:
    input_ids, attention_mask and labels (-100 outside the answer), each (count, length)."""
    ids, mask = random_probes(vocab, count, length, generator)
    lengths = mask.sum(-1, keepdim=True)
    positions = torch.arange(length)
    labels = torch.where((positions >= lengths - 2) & mask.bool(), ids, torch.full_like(ids, -100))
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def random_probes(vocab: int, count: int, length: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded probes of unequal length (the shortest is 3/4 of the longest), as real probes are."""
    ids = torch.randint(3, vocab, (count, length), generator=generator)
    lengths = torch.linspace(length, max(1, (3 * length) // 4), count).round().long()
    mask = (torch.arange(length)[None] < lengths[:, None]).long()
    return ids * mask, mask


def in_memory_peft_delta(base: PreTrainedModel, adapter: dict, layout: list[LoraSlot], lora: LoraConfig,
                         ids: torch.Tensor, mask: torch.Tensor, base_states: torch.Tensor) -> torch.Tensor:
    """The naive reference without disk: a PEFT model on its own copy of the base per adapter, forward only."""
    model = get_peft_model(copy.deepcopy(base), peft_config(lora))
    set_peft_model_state_dict(model, to_peft_state_dict(adapter, layout))
    return reduce_delta(probe_states(model, ids, mask)[None], base_states, DeltaSpec())[0]


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
    return 2.0 * size**3 / _median_seconds(lambda: a @ b, repeats) / 1e12


def _timed(fn: Callable[[], object], repeats: int, device: torch.device) -> tuple[float, float | None]:
    """(median seconds, peak GPU memory in GiB of this path alone; None off CUDA)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    seconds = _median_seconds(fn, repeats)
    return seconds, (torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None)


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

        stacked = stack_adapters(adapters)
        singles = [stack_adapters([a]) for a in adapters]
        row = {"model": name, "adapters": n_adapters, "probes": probes, "probe_length": length, "mode": mode,
               "gradient_checkpointing": checkpointing, "peft": None, "plain_bf16_weights": None}
        row["batched"], row["peak_gib_batched"] = _timed(lambda: delta_of(stacked), repeats, device)
        # The same batched path with one A product per module (core.lora's fusion off): what fusion saves.
        row["batched_unfused"], _ = _timed(lambda: delta_of(stacked, fuse=False), repeats, device)
        row["loop"], row["peak_gib_loop"] = _timed(lambda: [delta_of(s) for s in singles], repeats, device)
        # The floor in the delta path's own precision (autocast where it runs under autocast).
        row["plain"], row["peak_gib_plain"] = _timed(lambda: plain(model, autocast), repeats, device)
        if bf16_model is not None:
            row["plain_bf16_weights"], _ = _timed(lambda: plain(bf16_model, contextlib.nullcontext), repeats, device)
        if mode == "forward" and with_peft:
            row["peft"], _ = _timed(lambda: [in_memory_peft_delta(model, a, layout, lora, ids, mask,
                                                                  computers[False, True].base_states.cpu())
                                             for a in adapters], repeats, device)
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
    """The deltas stage's path (adapters read from PEFT directories, batched, no_grad) against the naive
    PEFT path (fresh base from disk and PeftModel.from_pretrained per adapter), on the default shape."""
    shape = tiny_shape(cfg)
    generator = torch.Generator().manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        base_dir, model = Path(tmp) / "base", random_model(shape)
        model.save_pretrained(str(base_dir))
        layout = layout_of_model(model, cfg.lora)
        dirs = []
        for i in range(n_adapters):
            peft_model = get_peft_model(random_model(shape), peft_config(cfg.lora))
            set_peft_model_state_dict(peft_model, to_peft_state_dict(random_adapter(layout, generator), layout))
            peft_model.save_pretrained(str(Path(tmp) / f"adapter-{i}"))
            dirs.append(Path(tmp) / f"adapter-{i}")
        ids, mask = random_probes(shape["vocab_size"], cfg.probe_count, 12, generator)

        def stage_path() -> None:
            base = load_base(base_dir)
            computer = DeltaComputer(base, layout, lora_scaling(cfg.lora), ids, mask)
            for first in range(0, len(dirs), cfg.deltas.adapters_per_batch):
                chunk = [load_adapter_tensors(d, layout, cfg.lora) for d in dirs[first : first + cfg.deltas.adapters_per_batch]]
                with torch.no_grad():
                    computer(stack_adapters(chunk))

        def peft_path() -> None:
            for d in dirs:
                peft_delta(base_dir, d, ids, mask)

        stage, peft = _median_seconds(stage_path, repeats), _median_seconds(peft_path, repeats)
    return {"model": "embedded-default", "adapters": n_adapters, "probes": cfg.probe_count,
            "stage": stage, "peft": peft, "peft_over_stage": peft / stage}


def bench_delta(cfg: Config, models: list[str], adapter_counts: list[int], repeats: int,
                probes: int | None, probe_length: int | None, device: str, dtype: str, fit_limit: int = 0,
                with_peft: bool = True) -> dict:
    """The cases of every model shape and adapter count; with fit_limit > 0 on a GPU, also the largest
    adapters per step that fit for each shape, with and without gradient checkpointing (searched up to
    fit_limit). Without with_peft, the PEFT column (a fresh PEFT model per adapter: slow at 1.5B) is null."""
    torch_device = torch.device(device)
    autocast_dtype = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    shapes = {
        "embedded-default": (tiny_shape(cfg), cfg.lora, probes or cfg.probe_count, probe_length or 12),
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
        "deltas_stage": bench_deltas_stage(cfg, 24, repeats) if "embedded-default" in models else None,
    }


def bench_train(cfg: Config, steps: int) -> dict:
    """Seconds per optimizer step of the training recipe for each objective (weight-only; the seed's delta;
    the delta variants; the gradient-balanced sum; the KL reference; the task loss on delta_batch_size items
    and on every item, as the study's SFT arms run it), measured in turn in one
    process on the embedded default's shapes (random base, teachers, prompts and records), each arm's ratio
    to weight-only beside it."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    base = random_model(tiny_shape(cfg))
    layout = layout_of_model(base, cfg.lora)
    weight_tokenizer = WeightTokenizer(layout, cfg.generator.chunk_width)
    n_checkpoints, n_prompts, embed_dim = 18, 256, 384
    tokens, scales = weight_tokenizer.tokenize(stack_adapters([random_adapter(layout, generator) for _ in range(n_checkpoints)]))
    probes = random_probes(32, cfg.probe_count, 12, generator)
    model = LoraGenerator(generator_shape(cfg.generator, embed_dim, weight_tokenizer.token_roles(), weight_tokenizer.token_columns(),
                          weight_tokenizer.token_dim))
    start_at_mean(model, tokens, scales)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.learning_rate)
    lam = max(cfg.lambda_delta, 1.0)
    all_layers = tuple(range(base.config.num_hidden_layers))
    specs = {"weight_only": DeltaSpec(), "delta": DeltaSpec(), "delta_per_probe": DeltaSpec("per_probe"),
             "delta_all_layers": DeltaSpec("mean", all_layers, normalise=True), "delta_grad_norm": DeltaSpec(),
             "kl": DeltaSpec(), "sft": DeltaSpec(), "sft_every_item": DeltaSpec()}
    # The KL reference's inputs: each checkpoint's answer prompts (kl.prompts of 12 tokens) and targets.
    answer_ids, answer_mask = random_probes(32, cfg.kl.prompts, 12, generator)
    kl_extras = {"kl_ids": answer_ids.expand(n_checkpoints, -1, -1), "kl_mask": answer_mask.expand(n_checkpoints, -1, -1),
                 "kl_target": torch.log_softmax(torch.randn(n_checkpoints, cfg.kl.prompts, 32, generator=generator), -1)}
    # The task loss's inputs: 32 training records of 16 tokens per checkpoint (the default's are shorter).
    records = random_records(32, 32 * n_checkpoints, 16, generator)
    record_rows = [torch.arange(32 * i, 32 * (i + 1)) for i in range(n_checkpoints)]
    record_stream = torch.Generator().manual_seed(1)
    arms = {}
    for name, spec in specs.items():
        computer = DeltaComputer(base, layout, lora_scaling(cfg.lora), *probes, spec=spec)
        shape = spec.shape(cfg.probe_count, base.config.hidden_size)
        dataset = GeneratorDataset(tokens, scales, torch.randn(n_checkpoints, *shape, generator=generator),
                                   [torch.arange(n_prompts)] * n_checkpoints,
                                   torch.randn(n_prompts, embed_dim, generator=generator),
                                   cfg.generator.prompts_per_sample, [str(i) for i in range(n_checkpoints)],
                                   kl_extras if name == "kl" else None, records, record_rows)
        if name == "weight_only":
            loss_fn = MultiTaskLoss(lambda_delta=0.0)
            train_cfg = type(cfg.train)(**{**cfg.train.__dict__, "delta_batch_size": 0})
        else:
            loss_fn = MultiTaskLoss(lambda_delta=lam, delta_loss_type=cfg.delta_loss_type,
                                    balance="grad_norm" if name == "delta_grad_norm" else "none",
                                    behaviour="sft" if name.startswith("sft") else "kl" if name == "kl" else "delta")
            # The study's SFT arms put the task loss on every item of the batch.
            train_cfg = cfg.train if name != "sft_every_item" else type(cfg.train)(
                **{**cfg.train.__dict__, "delta_batch_size": cfg.train.batch_size})
        arms[name] = (loss_fn, train_cfg, computer, dataset)
    times: dict[str, list[float]] = {name: [] for name in arms}
    for i in range(steps + 5):
        for name, (loss_fn, train_cfg, computer, dataset) in arms.items():
            start = time.perf_counter()
            metrics = training_step(model, dataset, generator, train_cfg, weight_tokenizer.mask, weight_tokenizer,
                                    computer, loss_fn, torch.device("cpu"), i, (record_stream, cfg.sft.records))
            metrics["_loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad()
            if i >= 5:  # the first steps warm up allocators
                times[name].append(time.perf_counter() - start)
    seconds = {name: statistics.median(values) for name, values in times.items()}
    return {"machine": {"platform": platform.platform(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__},
            "steps": steps, "batch_size": cfg.train.batch_size, "delta_batch_size": cfg.train.delta_batch_size,
            "probes": cfg.probe_count, "seconds_per_step": seconds,
            "over_weight_only": {name: value / seconds["weight_only"] for name, value in seconds.items()
                                 if name != "weight_only"}}


def bench_teachers(cfg: Config, task_count: int | None, steps: int) -> dict:
    """Wall seconds to train `task_count` of params' tasks (default: all) for `steps` steps: together in
    one batched forward per step, and one after another through PEFT, in one process. Each path saves
    and scores one snapshot per task, as the stage does; the base is untrained (speed only)."""
    bench_cfg = copy.deepcopy(cfg)
    bench_cfg.teachers.steps, bench_cfg.teachers.checkpoints_per_task, bench_cfg.teachers.checkpoint_interval = steps, 1, 1
    bench_cfg.base.pretrain_steps = 0
    tasks = make_tasks(bench_cfg.tasks, TASK_FILES_DIR)[:task_count]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        prepare_base(bench_cfg.base, vocabulary(tasks), pretraining_texts(bench_cfg.tasks, tasks, bench_cfg.base.pretrain_texts,
                                                     bench_cfg.base.pretrain_primitive_share),
                     root / "base")
        tokenizer = load_tokenizer(root / "base")
        init = shared_initialisation(load_base(root / "base", device="cpu"), bench_cfg.lora, bench_cfg.teachers.seed)
        start = time.perf_counter()
        train_teachers_together(root / "base", tokenizer, tasks, list(range(len(tasks))), init, bench_cfg, root / "together")
        together = time.perf_counter() - start
        start = time.perf_counter()
        for index, task in enumerate(tasks):
            train_teacher(root / "base", tokenizer, task, init, bench_cfg, root / "alone" / task.name, index)
        alone = time.perf_counter() - start
    return {"tasks": len(tasks), "steps": steps, "batch_size": bench_cfg.teachers.batch_size,
            "together_seconds": together, "one_after_another_seconds": alone, "together_over_one_after_another": together / alone,
            "torch_threads": torch.get_num_threads(), "machine": platform.machine()}


def bench_evaluate(cfg: Config, n_adapters: int, repeats: int) -> dict:
    """The evaluate stage's measurement of one task's adapters (accuracy on its test records and deltas on
    two probe sets): the batched hook path (all adapters in one batch) against PEFT's loading of each on a
    fresh base, in one process, on the embedded default's shape (untrained base, random adapters)."""
    from llgbm.artifacts.adapters import save_adapter
    from llgbm.core.delta import DeltaSpec
    from llgbm.recipes.evaluate import AdapterMeter

    bench_cfg = copy.deepcopy(cfg)
    bench_cfg.base.pretrain_steps = 0
    tasks = make_tasks(bench_cfg.tasks, TASK_FILES_DIR)
    generator = torch.Generator().manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        prepare_base(bench_cfg.base, vocabulary(tasks), [], root / "base")
        tokenizer = load_tokenizer(root / "base")
        layout = layout_of_model(load_base(root / "base", device="cpu"), cfg.lora)
        dirs = []
        for i in range(n_adapters):
            save_adapter(load_base(root / "base", device="cpu"), random_adapter(layout, generator), layout, cfg.lora,
                         root / f"adapter-{i}")
            dirs.append(root / f"adapter-{i}")
        vocab = len(tokenizer)
        probes = {"train_probes": random_probes(vocab, cfg.probe_count, 12, generator),
                  "eval": random_probes(vocab, cfg.evaluate.probe_count, 12, generator)}
        meter = AdapterMeter(root / "base", "float32", tokenizer, probes, DeltaSpec(), cfg.lora)
        task = tasks[0]
        batched = _median_seconds(lambda: meter.measure(dirs, task), repeats)
        peft = _median_seconds(lambda: [meter.peft_measure(d, task) for d in dirs], repeats)
    return {"adapters": n_adapters, "test_records": len(task.test), "probes": [cfg.probe_count, cfg.evaluate.probe_count],
            "batched": batched, "peft": peft, "peft_over_batched": peft / batched,
            "torch_threads": torch.get_num_threads(), "machine": platform.machine()}


def peft_delta(base_dir: Path, adapter_dir: Path, probe_ids: torch.Tensor, probe_mask: torch.Tensor,
               spec: DeltaSpec = DeltaSpec(), dtype: str = "float32") -> torch.Tensor:
    """delta(base + adapter, base) the way a PEFT user would get it: two fresh bases, one with the adapter
    loaded by `PeftModel.from_pretrained`."""
    base = probe_states(load_base(base_dir, dtype), probe_ids, probe_mask, spec.layers)
    adapted = probe_states(load_peft_model(load_base(base_dir, dtype), adapter_dir), probe_ids, probe_mask, spec.layers)
    return reduce_delta(adapted[None], base, spec)[0]
