"""The evaluation recipe: generated adapters on held-out and seen tasks against the base model, the
task's teacher, and the mean and nearest training teachers; every adapter loaded through PEFT."""
from __future__ import annotations

from pathlib import Path

import torch

from .config import Config
from .delta import probe_states, reduce_delta
from .delta_cache import DeltaCache
from .encoder import EmbeddingCache
from .errors import LlgbmError
from .generate import open_generator
from .io import read_json, sha256_file
from .lora import ADAPTER_WEIGHTS, load_adapter_tensors, load_peft_model
from .models import load_base, load_tokenizer
from .scoring import task_accuracy
from .tasks import Task, training_tasks
from .train import Paths, checked_probe_batch, delta_spec_of

METHODS = ("base", "generated", "teacher", "mean_teacher", "nearest_teacher")


def mean_adapter(adapters: list[dict[str, tuple[torch.Tensor, torch.Tensor]]]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The element-wise mean of A and of B over adapters (meaningful because all share one init)."""
    return {name: (torch.stack([a[name][0] for a in adapters]).mean(0), torch.stack([a[name][1] for a in adapters]).mean(0))
            for name in adapters[0]}


def nearest_task(batch_embeddings: torch.Tensor, task_embeddings: dict[str, torch.Tensor]) -> str:
    """The training task whose mean train-prompt embedding is most cosine-similar to the batch's mean."""
    query = torch.nn.functional.normalize(batch_embeddings.mean(0), dim=-1)
    scores = {name: float(query @ torch.nn.functional.normalize(e.mean(0), dim=-1)) for name, e in task_embeddings.items()}
    return max(scores, key=scores.get)


def delta_alignment(deltas: list[torch.Tensor], target: torch.Tensor) -> dict:
    """Cosine (mean, std, min, max), MSE and norm ratio of deltas against the teacher's delta (of any
    variant's shape, compared as flat vectors). A zero delta (the base model) has no direction: its cosine
    is None, not a number."""
    deltas, target = [d.flatten() for d in deltas], target.flatten()
    norms = [float(d.norm()) for d in deltas]
    cosines = [float(torch.nn.functional.cosine_similarity(d, target, dim=0)) if n > 0 else None
               for d, n in zip(deltas, norms)]
    defined = [c for c in cosines if c is not None]
    stats = torch.tensor(defined) if defined else None
    return {
        "delta_cosine_mean": float(stats.mean()) if defined else None,
        "delta_cosine_std": float(stats.std(unbiased=False)) if defined else None,
        "delta_cosine_min": float(stats.min()) if defined else None,
        "delta_cosine_max": float(stats.max()) if defined else None,
        "delta_mse": sum(float((d - target).square().mean()) for d in deltas) / len(deltas),
        "delta_norm_ratio": sum(norms) / len(norms) / float(target.norm()),
    }


def gain_share(accuracy: float, base: float, teacher: float, min_gap: float = 1e-6) -> float | None:
    """(acc - acc_base) / (acc_teacher - acc_base); undefined when the teacher gains nothing."""
    gap = teacher - base
    return (accuracy - base) / gap if gap > min_gap else None


def _mean_defined(values: list[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return sum(defined) / len(defined) if defined else None


def summarise_methods(per_task: dict[str, dict], names: list[str]) -> dict:
    """Per method, the mean over `names` of accuracy, gain share and delta cosine."""
    return {
        key: {m: _mean_defined([per_task[t][m][key] for t in names]) for m in METHODS}
        for key in ("accuracy", "gain_share", "delta_cosine_mean")
    }


def run_evaluation(cfg: Config, tasks: list[Task], paths: Paths, adapters_dir: Path,
                   prompt_batches: int) -> tuple[dict, dict]:
    """Generate adapters for every task from prompt batches of its test split, save every compared adapter
    as a PEFT directory, and measure each through `PeftModel.from_pretrained` on a fresh base."""
    adapters_dir = Path(adapters_dir)
    tokenizer = load_tokenizer(paths.base)
    cache = DeltaCache.load(paths.deltas)
    training = training_tasks(tasks, cfg)
    spec = delta_spec_of(cfg, paths.base)
    probe_ids, probe_mask = checked_probe_batch(cfg, training, cache, tokenizer, paths.base)
    loaded = open_generator(paths.generator, paths.base)
    if sorted(loaded.meta["heldout_tasks"]) != sorted(cfg.heldout_tasks):
        raise LlgbmError(f"{paths.generator}: trained with heldout_tasks {loaded.meta['heldout_tasks']}, params say "
                         f"{cfg.heldout_tasks}; rerun the train stage")
    embeddings = EmbeddingCache.load(paths.embeddings)
    index = read_json(paths.teachers / "index.json", "teachers index")["checkpoints"]
    final = {c["task"]: paths.teachers / c["path"] for c in sorted(index, key=lambda c: c["step"])}
    train_names = {t.name for t in training}

    def measure(adapter_dir: Path | None, task: Task) -> tuple[float, torch.Tensor]:
        model = load_base(paths.base, cfg.base.dtype)
        if adapter_dir is not None:
            model = load_peft_model(model, adapter_dir)
        delta = reduce_delta(probe_states(model, probe_ids, probe_mask, spec.layers)[None], base_states, spec)[0]
        return task_accuracy(model, tokenizer, task, "test"), delta

    base_states = probe_states(load_base(paths.base, cfg.base.dtype), probe_ids, probe_mask, spec.layers)
    mean_dir = adapters_dir / "mean_teacher"
    loaded.save(mean_adapter([load_adapter_tensors(paths.teachers / c["path"], loaded.layout, loaded.lora)
                              for c in index if c["task"] in train_names]), mean_dir)
    task_embeddings = {t.name: embeddings.lookup([r.prompt for r in t.train]) for t in training}

    per_task: dict[str, dict] = {}
    for task in sorted(tasks, key=lambda t: (t.name not in cfg.heldout_tasks, t.name)):
        if len(task.test) < loaded.prompts:
            raise LlgbmError(f"task '{task.name}': {len(task.test)} test prompts, the generator takes {loaded.prompts}")
        teacher_key = cache.key_for(sha256_file(final[task.name] / ADAPTER_WEIGHTS))
        rng = torch.Generator().manual_seed(cfg.seed * 1000 + sum(map(ord, task.name)))
        results: dict[str, list[tuple[float, torch.Tensor]]] = {m: [] for m in METHODS}
        nearest_names = []
        measured: dict[Path | None, tuple[float, torch.Tensor]] = {}

        def measure_once(adapter_dir: Path | None) -> tuple[float, torch.Tensor]:
            # The nearest teacher is often the same task's (or the same task for every batch).
            if adapter_dir not in measured:
                measured[adapter_dir] = measure(adapter_dir, task)
            return measured[adapter_dir]

        results["base"].append(measure_once(None))
        results["teacher"].append(measure_once(final[task.name]))
        results["mean_teacher"].append(measure_once(mean_dir))
        for k in range(prompt_batches):
            prompts = [task.test[i].prompt for i in torch.randperm(len(task.test), generator=rng)[: loaded.prompts].tolist()]
            condition = embeddings.lookup(prompts)
            out_dir = adapters_dir / task.name / f"generated-{k}"
            loaded.save(loaded.tensors(condition), out_dir)
            results["generated"].append(measure_once(out_dir))
            nearest_names.append(nearest_task(condition, task_embeddings))
            results["nearest_teacher"].append(measure_once(final[nearest_names[-1]]))
        teacher_delta = results["teacher"][0][1]
        cached_teacher = cache.get(teacher_key)
        # The cache is in training's precision and PEFT's path in full precision: under bf16 only a
        # coarse agreement is expected (a stale cache is still far off).
        tolerance = 1e-4 if cache.definition["precision"] == "no" else 0.1
        if (teacher_delta - cached_teacher).norm() > tolerance * cached_teacher.norm():
            raise LlgbmError(f"{final[task.name]}: PEFT-loaded delta disagrees with the delta cache; rerun the deltas stage")
        accuracy = {m: sum(a for a, _ in results[m]) / len(results[m]) for m in METHODS}
        per_task[task.name] = {
            "heldout": task.name in cfg.heldout_tasks, "chance": task.chance, "nearest_tasks": nearest_names,
            **{m: {"accuracy": accuracy[m],
                   "gain_share": gain_share(accuracy[m], accuracy["base"], accuracy["teacher"]),
                   **delta_alignment([d for _, d in results[m]], teacher_delta)} for m in METHODS},
        }
        print(f"{task.name:>12} ({'held-out' if task.name in cfg.heldout_tasks else 'seen'}): "
              + ", ".join(f"{m} {accuracy[m]:.3f}" for m in METHODS), flush=True)
    heldout = [t for t in per_task if per_task[t]["heldout"]]
    seen = [t for t in per_task if not per_task[t]["heldout"]]
    summary = {"heldout": summarise_methods(per_task, heldout), "seen": summarise_methods(per_task, seen)}
    return summary, per_task


def markdown_report(summary: dict, per_task: dict) -> str:
    def cell(value) -> str:
        return "—" if value is None else f"{value:.3f}"

    lines = ["# Evaluation", "",
             "Accuracy on each task's test records (multiple choice over the task's options); generated adapters "
             "come from prompt batches of the test split, held-out tasks were never seen in training.", ""]
    for split in ("heldout", "seen"):
        names = [t for t, row in per_task.items() if row["heldout"] == (split == "heldout")]
        if not names:
            continue
        lines += [f"## {'Held-out' if split == 'heldout' else 'Seen'} tasks", "",
                  "| task | chance | " + " | ".join(METHODS) + " | gain share (generated) | delta cosine (generated) |",
                  "|---|---|" + "---|" * len(METHODS) + "---|---|"]
        for t in names:
            row = per_task[t]
            lines.append(f"| {t} | {row['chance']:.3f} | " + " | ".join(cell(row[m]["accuracy"]) for m in METHODS)
                         + f" | {cell(row['generated']['gain_share'])} | {cell(row['generated']['delta_cosine_mean'])} |")
        means = summary[split]
        lines.append("| **mean** | | " + " | ".join(cell(means["accuracy"][m]) for m in METHODS)
                     + f" | {cell(means['gain_share']['generated'])} | {cell(means['delta_cosine_mean']['generated'])} |")
        lines.append("")
    return "\n".join(lines)


def accuracy_rows(per_task: dict) -> list[dict]:
    return [{"label": f"{t} / {m}", "task": t, "method": m, "accuracy": row[m]["accuracy"]}
            for t, row in per_task.items() for m in METHODS]
