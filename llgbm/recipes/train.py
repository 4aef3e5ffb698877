"""The multi-task training recipe: L = lambda_weights * L_weights + lambda(t) * L_behaviour.

The generator sees N prompts of a training task and emits weight tokens; L_weights compares them with
the teacher checkpoint's tokens; the behavioural term runs the generated adapters on the frozen base in
one batched forward and compares the delta with the teacher's cached delta (delta), the answer
distributions with the teacher's (kl), or scores the task's own training answers (sft).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from dvclive import Live
from tqdm.auto import tqdm
from transformers import AutoConfig, PreTrainedTokenizerBase, get_linear_schedule_with_warmup

from llgbm.artifacts.adapters import ADAPTER_WEIGHTS, load_adapter_tensors
from llgbm.artifacts.base_model import load_base, load_tokenizer
from llgbm.artifacts.delta_cache import DeltaCache, checked_probe_batch
from llgbm.artifacts.generator_files import save_generator
from llgbm.artifacts.teacher_index import read_index
from llgbm.assembly.deltas import DeltaDefinition, define_deltas
from llgbm.assembly.objective import behaviour_term, objective
from llgbm.config import Config, to_dict
from llgbm.core.generator import LoraGenerator, generator_shape, parameter_count, start_at_mean
from llgbm.core.lora import LoraSlot, lora_layout
from llgbm.core.losses import MultiTaskLoss, weight_norm_ratio, weight_token_loss
from llgbm.core.objective import BehaviourTerm
from llgbm.core.precision import autocast_to
from llgbm.core.scoring import adapted_task_accuracies
from llgbm.core.weight_tokens import WeightTokenizer
from llgbm.data.batching import GeneratorDataset, record_batch
from llgbm.data.conditions import evaluation_prompt_batches
from llgbm.data.encoder import EmbeddingCache
from llgbm.data.split import Split
from llgbm.data.tasks import Task, load_tasks
from llgbm.infra.errors import LlgbmError
from llgbm.infra.figures import line_panels
from llgbm.infra.io import sha256_file, sha256_json, write_atomic, write_json_atomic
from llgbm.infra.paths import TASKS_FILE, Paths
from llgbm.infra.provenance import changed_keys, code_fingerprint, library_versions, machine_description

FINISHED = "finished.json"  # what a finished run leaves in the checkpoint directory instead of state
PROVENANCE = "provenance.json"  # libraries, precision and device of a finished run, beside its metrics
CURVES = "curves.png"  # every per-step metric as a PNG, beside dvclive's files (which need a browser)
# loss_total is the value of lambda_weights * L_weights + lambda(t) * L_behaviour (whatever loss_balance does
# to the gradient); loss_behaviour is the behaviour term behaviour_loss names (the delta loss, the KL, or the
# task cross-entropy); delta_cosine_sim and the delta norms are the delta term's read-outs.
# grad_norm_weights / grad_norm_behaviour: the norm of each term's own gradient with respect to the generated
# weight tokens (logged on steps where the behaviour term is differentiated); behaviour_coefficient: the
# factor its gradient entered with (lambda(t) itself unless loss_balance rescales it).
# validation_accuracy: the generated adapters' accuracy on the validation tasks (every
# train.validation_interval steps and at the last, with validation_tasks > 0).
STEP_METRICS = ("loss_total", "loss_weights", "loss_behaviour", "lambda_delta", "lambda_weights", "delta_cosine_sim", "delta_pred_norm",
                "delta_target_norm", "learning_rate", "grad_norm", "weight_norm_ratio", "grad_norm_weights",
                "grad_norm_behaviour", "behaviour_coefficient", "validation_accuracy")
# The convergence read-out: L_weights' relative change over the last 10% of steps (its mean over the last
# 5% against the 5% before; near 0 once the curve is flat), in the final metrics.
TAIL_CHANGE = "loss_weights_tail_change"


def build_dataset(cfg: Config, training: list[Task], paths: Paths, cache: DeltaCache, layout: list[LoraSlot],
                  weight_tokenizer: WeightTokenizer, embeddings: EmbeddingCache, definition: DeltaDefinition,
                  tokenizer) -> GeneratorDataset:
    """Every checkpoint of every training task; held-out tasks' checkpoints, prompts and records never
    enter. With behaviour_loss kl, each also carries its teacher's answer distributions and their prompts;
    with sft, its task's training records (token batches)."""
    by_name = {t.name: t for t in training}
    chosen = [c for c in read_index(paths.teachers) if c["task"] in by_name]
    tokens, scales, deltas, rows, names, kl_targets, kl_top_ids = [], [], [], [], [], [], []
    for c in chosen:
        adapter_dir = paths.teachers / c["path"]
        key = cache.key_for(sha256_file(adapter_dir / ADAPTER_WEIGHTS))
        if key not in cache:
            raise LlgbmError(f"{adapter_dir}: no delta in {cache.root}; rerun the deltas stage")
        t, s = weight_tokenizer.tokenize(load_adapter_tensors(adapter_dir, layout, cfg.lora))
        tokens.append(t)
        scales.append(s)
        deltas.append(cache.get(key))
        if cfg.behaviour_loss == "kl":
            target, top_ids = cache.get_kl(key)
            kl_targets.append(target)
            kl_top_ids.append(top_ids)
        rows.append(embeddings.rows([r.condition for r in by_name[c["task"]].train]))
        names.append(f"{c['task']}/{c['step']}")
    extras = {}
    if kl_targets:
        extras["kl_target"] = torch.stack(kl_targets)
        extras["kl_ids"], extras["kl_mask"] = definition.answers.batch([c["task"] for c in chosen], tokenizer)
        if kl_top_ids[0] is not None:
            extras["kl_top_ids"] = torch.stack(kl_top_ids)
    records, record_rows = task_records(training, [c["task"] for c in chosen], cfg.sft.records, tokenizer) \
        if cfg.behaviour_loss == "sft" else (None, None)
    return GeneratorDataset(torch.stack(tokens), torch.stack(scales), torch.stack(deltas), rows, embeddings.embeddings,
                            cfg.generator.prompts_per_sample, names, extras, records, record_rows,
                            cfg.sft.records if records is not None else 0)


def task_records(training: list[Task], checkpoint_tasks: list[str], count: int,
                 tokenizer) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    """The task loss's data: one token batch of every training task's training records (test records and
    held-out tasks never), and per checkpoint the rows of its own task's."""
    short = next((t for t in training if len(t.train) < count), None)
    if short is not None:
        raise LlgbmError(f"sft.records: {count} per step, but task '{short.name}' has only {len(short.train)} "
                         "training records")
    batch = record_batch(tokenizer, [r for t in training for r in t.train])
    first, rows = 0, {}
    for t in training:
        rows[t.name] = torch.arange(first, first + len(t.train))
        first += len(t.train)
    return batch, [rows[name] for name in checkpoint_tasks]


def _checkpoints(directory: Path) -> list[Path]:
    return sorted(directory.glob("step-*.pt"), key=lambda p: int(re.findall(r"\d+", p.stem)[0]))


def _load_checkpoint(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch.load raises many types for a damaged file (pickle, zip, EOF, ...)
        raise LlgbmError(f"{path}: unreadable training checkpoint ({type(exc).__name__}); delete it to start "
                         "afresh or restore it") from None
    required = {"step", "provenance", "model", "optimizer", "scheduler", "ranks", "history"}
    if not isinstance(state, dict) or not required <= state.keys():
        return {"step": None, "provenance": {"format": "older checkpoint format"}}
    return state


def _replay_history(live, history: dict[str, list[tuple[int, float]]]) -> None:
    """Write the per-step metrics of the resumed steps again: DVC removes the plots output before it
    reruns the stage, so the checkpoint, not the old files, is where they survive a kill."""
    for name, rows in history.items():
        for step, value in rows:
            live.step = step
            live.log_metric(name, value)


@dataclass
class Objective:
    """L = lambda_weights * L_weights + lambda(t) * L_behaviour, the behaviour term on the first `adapters`
    items of each batch (none: weight matching alone)."""
    loss: MultiTaskLoss
    term: BehaviourTerm | None
    adapters: int


@dataclass
class Validation:
    """The generated adapters' accuracy on the validation tasks during training: for each task one adapter,
    from the first of the prompt batches the evaluate stage draws for it, scored on its test records."""
    tasks: list[Task]
    conditions: list[torch.Tensor]  # per task, its prompt batch's embeddings (prompts_per_sample, dim)
    weight_tokenizer: WeightTokenizer
    base: torch.nn.Module
    layout: list[LoraSlot]
    scaling: float
    tokenizer: PreTrainedTokenizerBase
    autocast_dtype: torch.dtype | None  # training's: a bf16 frozen base meets fp32 generated adapters under it

    @torch.no_grad()
    def accuracy(self, generator: torch.nn.Module) -> float:
        was_training = generator.training
        generator.eval()
        accuracies = []
        for task, condition in zip(self.tasks, self.conditions):
            tokens, scales = generator(condition[None].to(next(generator.parameters()).device))
            tokens = tokens.float() * self.weight_tokenizer.mask.to(tokens.device)
            adapters = self.weight_tokenizer.detokenize(tokens, scales.float())
            with autocast_to(tokens.device.type, self.autocast_dtype):
                accuracy = adapted_task_accuracies(self.base, self.layout, adapters, self.scaling, self.tokenizer, task)
            accuracies.append(float(accuracy[0]))
        generator.train(was_training)
        return sum(accuracies) / len(accuracies)


@dataclass
class TrainingRun:
    """Everything one training run holds: built once by `_set_up`, advanced by `_optimizer_step`."""
    cfg: Config
    paths: Paths
    accelerator: Accelerator
    mixed_precision: str
    training: list[Task]
    heldout: list[str]
    validation: Validation | None  # with validation_tasks > 0
    cache: DeltaCache
    embeddings: EmbeddingCache
    weight_tokenizer: WeightTokenizer
    dataset: GeneratorDataset
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    objective: Objective
    data_generator: torch.Generator
    records_generator: torch.Generator  # the task loss's record draws, a stream of their own
    provenance: dict


def _set_up(cfg: Config, tasks: list[Task], paths: Paths) -> TrainingRun:
    """Data, targets and the checks that they match params; then the generator, its optimizer and the
    frozen base's behaviour term (in this order: the seed fixes the generator's initialisation)."""
    tr = cfg.train
    tokenizer = load_tokenizer(paths.base)
    split = Split.load(paths.split)
    training = split.training_tasks(tasks)
    definition = define_deltas(cfg, tasks, training, paths.base, tokenizer)
    # Without CUDA, processes started by `accelerate launch` train on CPU over gloo.
    accelerator = Accelerator(mixed_precision=definition.precision, gradient_accumulation_steps=tr.gradient_accumulation_steps,
                              cpu=not torch.cuda.is_available())
    device = accelerator.device
    cache = DeltaCache.load(paths.deltas)
    # The targets must be computed exactly as training computes deltas, in its precision too.
    cache.check_definition(definition.cache_identity())
    probe_ids, probe_mask = checked_probe_batch(cache, definition.probes, tokenizer, paths.base)
    layout = lora_layout(AutoConfig.from_pretrained(str(paths.base)), cfg.lora)
    weight_tokenizer = WeightTokenizer(layout, cfg.generator.chunk_width)
    embeddings = EmbeddingCache.load(paths.embeddings)
    dataset = build_dataset(cfg, training, paths, cache, layout, weight_tokenizer, embeddings, definition, tokenizer)

    torch.manual_seed(cfg.seed)
    shape = generator_shape(cfg.generator, embeddings.dim, weight_tokenizer.token_roles(), weight_tokenizer.token_columns(),
                          weight_tokenizer.token_dim)
    model = LoraGenerator(shape)
    start_at_mean(model, dataset.tokens, dataset.scales)
    optimizer = torch.optim.AdamW(model.parameters(), lr=tr.learning_rate, weight_decay=tr.weight_decay)
    # The schedule counts optimizer steps, so it stays out of accelerator.prepare: accelerate's wrapper
    # steps a scheduler once per process, which with N processes ends the schedule after steps / N.
    scheduler = get_linear_schedule_with_warmup(optimizer, tr.warmup_steps, tr.steps)
    # Each process draws its own batches (its own stream, saved per rank in checkpoints).
    data_generator = torch.Generator().manual_seed(cfg.seed * 7919 + accelerator.process_index)
    records_generator = torch.Generator().manual_seed(1_000_003 + cfg.seed * 7919 + accelerator.process_index)
    model, optimizer = accelerator.prepare(model, optimizer)
    base = load_base(paths.base, definition.base_dtype, device=device)
    term = behaviour_term(cfg, definition, base, layout, probe_ids, probe_mask) if tr.behaviour_adapters else None
    validation_tasks = split.validation_tasks(tasks)
    validation = Validation(validation_tasks, [embeddings.lookup(evaluation_prompt_batches(t, cfg.generator.prompts_per_sample,
                                                                                         1, cfg.seed)[0])
                                               for t in validation_tasks],
                            weight_tokenizer, base, layout, definition.scaling, tokenizer,
                            definition.autocast_dtype) if validation_tasks else None
    # Everything a checkpoint's state depends on: resuming after any of it changed would mix two runs.
    provenance = {"config": sha256_json(to_dict(cfg)), "code": code_fingerprint(__name__),
                  "libraries": library_versions(), "precision": definition.precision,
                  "processes": accelerator.num_processes, "deltas": cache.probes.fingerprint(),
                  "delta_definition": sha256_json(cache.definition), "base": cache.base_fingerprint,
                  "checkpoints": sha256_json(dataset.names), "data": dataset.fingerprint()}
    return TrainingRun(cfg, paths, accelerator, definition.precision, training, list(split.heldout), validation, cache, embeddings,
                       weight_tokenizer, dataset, model, optimizer, scheduler,
                       Objective(objective(cfg), term, tr.behaviour_adapters), data_generator, records_generator, provenance)


def _resume(run: TrainingRun) -> tuple[int, dict[str, list[tuple[int, float]]]]:
    """(the step to continue after, the per-step history so far) from the last checkpoint of this very
    run; a checkpoint made by another run (any provenance entry changed) is removed and training starts
    fresh."""
    accelerator, history = run.accelerator, {name: [] for name in STEP_METRICS}
    existing = _checkpoints(run.paths.checkpoints)
    if not existing:
        return 0, history
    state = _load_checkpoint(existing[-1])
    changed = changed_keys(state["provenance"], run.provenance)
    if changed:
        accelerator.print(f"{existing[-1]}: made by another run ({', '.join(changed)} changed); training "
                          "starts fresh")
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            for stale in existing:
                stale.unlink()
        return 0, history
    accelerator.unwrap_model(run.model).load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    rank_state = state["ranks"][accelerator.process_index]
    run.data_generator.set_state(rank_state["data_generator"])
    run.records_generator.set_state(rank_state["records_generator"])
    torch.set_rng_state(rank_state["torch_rng"])
    run.objective.loss.current_step = state["step"]
    accelerator.print(f"{existing[-1]}: resuming at step {state['step']} of {run.cfg.train.steps}")
    return state["step"], {name: [tuple(row) for row in rows] for name, rows in state["history"].items()}


def _optimizer_step(run: TrainingRun, step: int) -> dict[str, float]:
    """One optimizer step over gradient_accumulation_steps micro-batches; its metrics (means over the
    micro-batches, grad_norm as clipped on the last)."""
    tr, accelerator = run.cfg.train, run.accelerator
    sums: dict[str, float] = {}
    for _ in range(tr.gradient_accumulation_steps):
        with accelerator.accumulate(run.model):
            micro = training_step(run.model, run.dataset, run.weight_tokenizer, run.objective, tr.batch_size,
                                  (run.data_generator, run.records_generator), accelerator.device, step)
            accelerator.backward(micro.pop("_loss"))
            if accelerator.sync_gradients:
                micro["grad_norm"] = float(accelerator.clip_grad_norm_(run.model.parameters(), tr.max_grad_norm))
            run.optimizer.step()
            if accelerator.sync_gradients:
                run.scheduler.step()
            run.optimizer.zero_grad()
        for k, v in micro.items():
            sums[k] = sums.get(k, 0.0) + v
    metrics = {k: v / tr.gradient_accumulation_steps for k, v in sums.items() if k != "grad_norm"}
    metrics["grad_norm"] = sums["grad_norm"]
    metrics["learning_rate"] = run.scheduler.get_last_lr()[0]
    if not math.isfinite(metrics["grad_norm"]):
        raise LlgbmError(f"train: grad_norm is {metrics['grad_norm']} at step {step}; no checkpoint written")
    run.objective.loss.step()
    return metrics


def _log(live: Live | None, history: dict[str, list[tuple[int, float]]], step: int, metrics: dict[str, float],
         summary: bool) -> None:
    for name in STEP_METRICS:
        if name in metrics:
            history[name].append((step, metrics[name]))
    if live is not None:
        live.step = step
        for name in STEP_METRICS:
            if name in metrics:
                live.log_metric(name, metrics[name])
        if summary:
            live.make_summary()


def _finish(run: TrainingRun, live: Live | None, history: dict[str, list[tuple[int, float]]]) -> None:
    """The final generator and its metadata; no resumable state is left behind."""
    cfg, paths, accelerator = run.cfg, run.paths, run.accelerator
    meta = {"chunk_width": cfg.generator.chunk_width, "lora": to_dict(cfg.lora), "base_path": str(paths.base),
            "base_fingerprint": run.cache.base_fingerprint, "probes_fingerprint": run.cache.probes.fingerprint(),
            "encoder": run.embeddings.encoder_name, "steps": cfg.train.steps, "seed": cfg.seed,
            "training_tasks": [t.name for t in run.training], "heldout_tasks": run.heldout,
            "validation_tasks": [t.name for t in run.validation.tasks] if run.validation else []}
    model = accelerator.unwrap_model(run.model)
    save_generator(model, meta, paths.generator)
    # Read-outs of the whole run, beside the last step's metrics: the generator's size and whether
    # L_weights had stopped falling.
    live.summary.update({"generator_parameters": parameter_count(model), TAIL_CHANGE: tail_change(history["loss_weights"])})
    live.end()
    line_panels(history, paths.live / CURVES, f"training, {cfg.train.steps} steps (seed {cfg.seed})")
    # A finished run leaves nothing a later run could resume from by mistake.
    for finished in _checkpoints(paths.checkpoints):
        finished.unlink()
    write_json_atomic(paths.checkpoints / FINISHED, {"step": cfg.train.steps, "provenance": run.provenance})
    # Beside the metrics, so that an experiment's commit says what ran it (llgbm.study.run_archive keys runs by it).
    write_json_atomic(paths.live / PROVENANCE, {"libraries": run.provenance["libraries"],
                                                "precision": run.mixed_precision,
                                                "processes": accelerator.num_processes,
                                                "device": accelerator.device.type, "machine": machine_description()})


def tail_change(rows: list[tuple[int, float]], share: float = 0.1) -> float:
    """The relative change of a per-step series over its last `share` of steps: the mean of the last half
    of that window against the mean of its first half, minus 1 (negative while the series still falls)."""
    window = [value for _, value in rows[-max(2, round(len(rows) * share)):]]
    half = len(window) // 2
    before, after = sum(window[:half]) / half, sum(window[half:]) / (len(window) - half)
    return after / before - 1 if before else float("nan")


def train_generator(cfg: Config, tasks: list[Task], paths: Paths, stop_after_step: int | None = None) -> dict:
    """Train (or resume) the generator; writes the final generator and returns the last step's metrics.

    stop_after_step ends the run early as a kill would (after that step, without the final outputs);
    tests use it to check that a resumed run ends where an uninterrupted one does.
    """
    run = _set_up(cfg, tasks, paths)
    accelerator, tr = run.accelerator, cfg.train
    start, history = _resume(run)
    paths.checkpoints.mkdir(parents=True, exist_ok=True)
    live = None
    if accelerator.is_main_process:
        live = Live(str(paths.live), dvcyaml=False, save_dvc_exp=False, report=None)
        _replay_history(live, history)
    progress = tqdm(total=tr.steps, initial=start, desc="train", mininterval=5.0,
                    disable=not accelerator.is_main_process)
    metrics: dict[str, float] = {}
    run.model.train()
    for step in range(start + 1, tr.steps + 1):
        metrics = _optimizer_step(run, step)
        if run.validation and accelerator.is_main_process and (step % tr.validation_interval == 0 or step == tr.steps):
            metrics["validation_accuracy"] = run.validation.accuracy(accelerator.unwrap_model(run.model))
        _log(live, history, step, metrics, summary=step % tr.log_interval == 0 or step == tr.steps)
        progress.update(1)
        progress.set_postfix(loss=f"{metrics['loss_total']:.4f}", refresh=False)  # tqdm throttles only what it refreshes itself
        if step % tr.save_interval == 0 and step < tr.steps:
            _save_checkpoint(accelerator, paths.checkpoints, step, run, history)
        if stop_after_step is not None and step >= stop_after_step:
            progress.close()
            accelerator.wait_for_everyone()
            return metrics
    progress.close()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _finish(run, live, history)
    accelerator.wait_for_everyone()
    return metrics


def training_step(model: torch.nn.Module, dataset: GeneratorDataset, weight_tokenizer: WeightTokenizer,
                  objective: Objective, batch_size: int, streams: tuple[torch.Generator, torch.Generator],
                  device: torch.device, step: int) -> dict:
    """One micro-batch: the weight term, the behaviour term on the first `objective.adapters` items, their
    combination. Returns the metrics and, under "_loss", what to differentiate. `streams`: the batch draws'
    random stream and the task loss's record draws' (a stream of its own, so it leaves the other as it is)."""
    batch = {k: v.to(device) for k, v in dataset.draw(batch_size, streams[0], objective.adapters, streams[1]).items()}
    mask = weight_tokenizer.mask.to(device)
    pred_tokens, pred_scales = model(batch["condition"])
    # fp32 at least (a bf16 generator's outputs), padding zero as in the targets.
    pred_tokens = pred_tokens.to(torch.promote_types(pred_tokens.dtype, torch.float32)) * mask
    pred_scales = pred_scales.to(pred_tokens.dtype)
    loss_weights = weight_token_loss(pred_tokens, pred_scales, batch["tokens"], batch["scales"], mask)
    loss_behaviour, metrics = _behaviour(objective, weight_tokenizer, pred_tokens, pred_scales, batch)
    total, combined = objective.loss.combine(loss_weights, loss_behaviour, pred_tokens)
    metrics.update(combined, weight_norm_ratio=weight_norm_ratio(pred_tokens, pred_scales, batch["tokens"], batch["scales"], mask))
    for name, value in metrics.items():
        if not math.isfinite(value):
            raise LlgbmError(f"train: {name} is {value} at step {step}; no checkpoint written")
    return {**metrics, "_loss": total}


def _behaviour(objective: Objective, weight_tokenizer: WeightTokenizer, pred_tokens: torch.Tensor,
               pred_scales: torch.Tensor, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor | None, dict[str, float]]:
    """The behaviour term of the first `objective.adapters` generated adapters, with its read-outs.

    With lambda(t) = 0 it is still measured (for the logs) but not differentiated. It reaches the scales
    detached: a token's mean and log-std move all its r x chunk_width weights at once. With the weight term,
    that term trains them (the delta's gradient there, norm 10^2..10^3 on the embedded default, swamped
    everything after clipping); without it they stay at the training teachers' mean, where the generator
    starts (measured, SFT-only on the embedded default: with the scales trained too they ran to the bound,
    weight norm 4.4x, and the answers to uniform, accuracy 0.167 = chance; with them fixed the task loss
    fell to 0.46 by step 1200)."""
    n = objective.adapters
    if objective.term is None or n == 0:
        return None, {}
    with torch.set_grad_enabled(objective.loss.get_lambda() > 0):
        adapters = weight_tokenizer.detokenize(pred_tokens[:n], pred_scales[:n].detach())
        return objective.term(adapters, {k: v[:n] for k, v in batch.items()})


def _save_checkpoint(accelerator: Accelerator, directory: Path, step: int, run: TrainingRun, history: dict, keep: int = 2) -> None:
    """Every rank's random state, gathered; the rest (identical on every rank) from the main process."""
    ranks = gather_object([{"data_generator": run.data_generator.get_state(),
                            "records_generator": run.records_generator.get_state(), "torch_rng": torch.get_rng_state()}])
    if accelerator.is_main_process:
        state = {"step": step, "provenance": run.provenance, "model": accelerator.unwrap_model(run.model).state_dict(),
                 "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(), "ranks": ranks,
                 "history": history}
        write_atomic(directory / f"step-{step:06d}.pt", lambda tmp: torch.save(state, tmp))
        for old in _checkpoints(directory)[:-keep]:
            old.unlink()
        (directory / FINISHED).unlink(missing_ok=True)
    accelerator.wait_for_everyone()


def run(cfg: Config) -> None:
    metrics = train_generator(cfg, load_tasks(TASKS_FILE), Paths.pipeline())
    print({k: round(v, 5) for k, v in metrics.items()})
