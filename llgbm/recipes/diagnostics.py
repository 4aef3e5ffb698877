"""Diagnostics of the testbed: how much zero-shot headroom exists before any generator runs.

The multi-task LoRA reference (Text-to-LoRA's strongest baseline): one LoRA from the teachers' shared
initialisation, trained on the union of every training task's records, then measured on held-out tasks.
"""
from __future__ import annotations

from pathlib import Path

import torch
from peft import PeftModel, get_peft_model, set_peft_model_state_dict
from transformers import PreTrainedTokenizerBase

from llgbm.artifacts.adapters import (
    load_adapter_tensors,
    peft_config,
    save_adapter,
    save_peft_model,
    shared_initialisation,
)
from llgbm.artifacts.base_model import load_base, load_tokenizer
from llgbm.artifacts.teacher_index import final_checkpoints
from llgbm.config import Config
from llgbm.core.adapter_math import combine_updates
from llgbm.core.fitting import lstsq_r2, ridge_fit, ridge_predict
from llgbm.core.lora import LoraConfig, lora_layout
from llgbm.core.scoring import task_accuracy
from llgbm.core.similarity import cosine_ranking, max_cosine
from llgbm.core.training import run_steps
from llgbm.data.batching import record_batch
from llgbm.data.encoder import EmbeddingCache
from llgbm.data.split import Split
from llgbm.data.tasks import Task, load_tasks, primitive_tasks, task_pairs
from llgbm.infra.errors import LlgbmError
from llgbm.infra.io import atomic_dir, write_json_atomic
from llgbm.infra.paths import (
    BASE_DIR,
    DIAGNOSTICS_DIR,
    DIAGNOSTICS_REPORT,
    EMBEDDINGS_DIR,
    RESULTS_DIR,
    SPLIT_FILE,
    TASKS_FILE,
    TEACHERS_DIR,
)


def train_multitask_lora(base_dir: Path, tokenizer: PreTrainedTokenizerBase, tasks: list[Task],
                         init_state: dict[str, torch.Tensor], cfg: Config) -> tuple[PeftModel, list[float]]:
    """One LoRA on the pooled train records of `tasks` (uniform over records; tasks are equally sized in
    the built-in families); returns the model and its loss curve."""
    d = cfg.diagnostics
    model = get_peft_model(load_base(base_dir, cfg.base.dtype), peft_config(cfg.lora))
    set_peft_model_state_dict(model, init_state)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=d.multitask_learning_rate, weight_decay=0.0)
    generator = torch.Generator().manual_seed(cfg.teachers.seed)
    device = next(model.parameters()).device
    records = [r for task in tasks for r in task.train]
    batch = {k: v.to(device) for k, v in record_batch(tokenizer, records).items()}

    def step_loss(step: int) -> torch.Tensor:
        rows = torch.randint(0, len(records), (d.multitask_batch_size,), generator=generator).to(device)
        loss = model(**{k: v[rows] for k, v in batch.items()}).loss
        if not torch.isfinite(loss):
            raise LlgbmError(f"diagnostics: multi-task LoRA loss is {loss.item()} at step {step}; "
                             "lower diagnostics.multitask_learning_rate")
        return loss

    model.train()
    losses = run_steps(optimizer, d.multitask_steps, step_loss)
    model.eval()
    return model, losses


def accuracies(model, tokenizer: PreTrainedTokenizerBase, tasks: list[Task]) -> dict[str, float]:
    return {task.name: task_accuracy(model, tokenizer, task, "test") for task in tasks}


def mean_above_chance(accuracy: dict[str, float], tasks: list[Task]) -> float:
    return sum(accuracy[t.name] - t.chance for t in tasks) / len(tasks)


def split_tasks(split: Split, tasks: list[Task]) -> tuple[list[Task], list[Task]]:
    """(training, held-out) tasks: training as the generator's (`max_training_tasks` included), so the
    references measure what the generator could have learned from."""
    training, heldout = split.training_tasks(tasks), split.heldout_tasks(tasks)
    if not heldout:
        raise LlgbmError("heldout_tasks: diagnostics need at least one held-out task")
    return training, heldout


def headroom(cfg: Config, tasks: list[Task], split: Split, base_dir: Path, adapters_dir: Path) -> dict:
    """Base accuracy (on the primitives too, for the compositional family) and the multi-task LoRA
    reference, saved as a PEFT directory and measured through PeftModel.from_pretrained on a fresh base."""
    training, heldout = split_tasks(split, tasks)
    tokenizer = load_tokenizer(base_dir)
    base = load_base(base_dir, cfg.base.dtype)
    result: dict = {"chance": {t.name: t.chance for t in heldout},
                    "base": {"heldout": accuracies(base, tokenizer, heldout)}}
    if task_pairs(cfg.tasks) is not None:  # the compositional family has primitives
        result["base"]["primitives"] = accuracies(base, tokenizer, primitive_tasks(cfg.tasks, cfg.tasks.test_per_task,
                                                                                   cfg.tasks.seed))
    init_state = shared_initialisation(load_base(base_dir, cfg.base.dtype), cfg.lora, cfg.teachers.seed)
    model, losses = train_multitask_lora(base_dir, tokenizer, training, init_state, cfg)
    save_peft_model(model, adapters_dir / "multitask")
    loaded = PeftModel.from_pretrained(load_base(base_dir, cfg.base.dtype), str(adapters_dir / "multitask")).eval()
    result["multitask"] = {"heldout": accuracies(loaded, tokenizer, heldout),
                           "seen": accuracies(loaded, tokenizer, training),
                           "loss_first": losses[0], "loss_final": sum(losses[-10:]) / len(losses[-10:])}
    return result


def headroom_summary(result: dict, tasks: list[Task], split: Split) -> dict:
    """The numbers a reader needs first: mean held-out accuracy and its distance above chance."""
    training, heldout = split_tasks(split, tasks)
    summary = {
        "heldout_chance_mean": sum(t.chance for t in heldout) / len(heldout),
        "base_heldout_accuracy_mean": sum(result["base"]["heldout"].values()) / len(heldout),
        "base_heldout_max_distance_from_chance": max(abs(result["base"]["heldout"][t.name] - t.chance) for t in heldout),
        "multitask_heldout_accuracy_mean": sum(result["multitask"]["heldout"].values()) / len(heldout),
        "multitask_heldout_above_chance": mean_above_chance(result["multitask"]["heldout"], heldout),
        "multitask_seen_accuracy_mean": sum(result["multitask"]["seen"].values()) / len(training),
    }
    primitives = result["base"].get("primitives")
    if primitives:
        for kind in ("selector", "transform"):
            values = [v for k, v in primitives.items() if k.startswith(kind + ":")]
            summary[f"base_{kind}_primitive_accuracy_mean"] = sum(values) / len(values)
    return summary


# --- Prompt -> task recoverability: can a linear read-out of the frozen encoder name a held-out task's parts? ---

def readout_scores(fit: dict[str, torch.Tensor], test: dict[str, torch.Tensor], labels: dict[str, str],
                 penalty: float) -> dict[str, float]:
    """A ridge read-out from prompt embeddings to one-hot labels, fitted on the prompts of the `fit` tasks;
    per `test` task, the share of its prompts whose arg-max is the task's own label (a label no fit task
    has cannot be predicted: it scores 0)."""
    classes = sorted({labels[n] for n in (*fit, *test)})
    x = torch.cat(list(fit.values())).double()
    y = torch.zeros(x.shape[0], len(classes), dtype=torch.float64)
    row = 0
    for name, rows in fit.items():
        y[row : row + len(rows), classes.index(labels[name])] = 1.0
        row += len(rows)
    weights = ridge_fit(x, y, penalty)
    return {name: (ridge_predict(weights, rows.double()).argmax(-1) == classes.index(labels[name])).double().mean().item()
            for name, rows in test.items()}


def leave_one_task_out(embeddings: dict[str, torch.Tensor], labels: dict[str, str], penalty: float) -> dict[str, float]:
    """readout_scores for each task with the read-out fitted on every other task."""
    return {name: readout_scores({n: e for n, e in embeddings.items() if n != name}, {name: embeddings[name]},
                               labels, penalty)[name] for name in embeddings}


# --- Weight-space structure: is a held-out teacher's update explained by the training teachers'? ---

def weight_space_structure(heldout: dict[str, dict[str, torch.Tensor]],
                           training: dict[str, dict[str, torch.Tensor]]) -> dict[str, dict[str, float]]:
    """Per held-out task, over target modules (each update B @ A): the mean least-squares R^2 from the
    training teachers' updates of the same module, and the mean cosine to the nearest of them."""
    result = {}
    for name, updates in heldout.items():
        r2 = [lstsq_r2(update, [t[module] for t in training.values()]) for module, update in updates.items()]
        cos = [max_cosine(update, [t[module] for t in training.values()]) for module, update in updates.items()]
        result[name] = {"r2_mean": sum(r2) / len(r2), "nearest_cosine_mean": sum(cos) / len(cos)}
    return result


def final_updates(teachers_dir: Path, base_dir: Path, cfg: Config) -> dict[str, dict[str, torch.Tensor]]:
    """Each task's final teacher checkpoint as {module: B @ A} (B starts at zero: the update itself)."""
    final = final_checkpoints(teachers_dir)
    layout = lora_layout(load_base(base_dir, cfg.base.dtype, device="cpu").config, cfg.lora)
    return {task: {name: b @ a for name, (a, b) in load_adapter_tensors(path, layout, cfg.lora).items()}
            for task, path in final.items()}


def structure(cfg: Config, tasks: list[Task], split: Split, base_dir: Path, teachers_dir: Path, embeddings_dir: Path) -> dict:
    """Weight-space structure of the teachers and, for the compositional family, prompt -> selector and
    transform recoverability (held-out tasks: read-out fitted on the training tasks; training tasks: leave
    one task out)."""
    training, heldout = split_tasks(split, tasks)
    updates = final_updates(teachers_dir, base_dir, cfg)
    result: dict = {"weight_space": weight_space_structure({t.name: updates[t.name] for t in heldout},
                                                           {t.name: updates[t.name] for t in training})}
    pairs = task_pairs(cfg.tasks)
    if pairs is not None:
        cache = EmbeddingCache.load(embeddings_dir)
        count = cfg.diagnostics.readout_prompts
        embed = {t.name: cache.lookup([r.condition for r in t.train[:count]]) for t in tasks}
        fit = {t.name: embed[t.name] for t in training}
        test = {t.name: embed[t.name] for t in heldout}
        penalty = cfg.diagnostics.ridge_penalty
        for part, position in (("selector", 0), ("transform", 1)):
            labels = {name: pair[position] for name, pair in pairs.items()}
            result[f"recover_{part}"] = {"heldout": readout_scores(fit, test, labels, penalty),
                                         "training_leave_one_out": leave_one_task_out(fit, labels, penalty)}
    return result


def structure_summary(result: dict) -> dict:
    weight = list(result["weight_space"].values())
    summary = {"weight_r2_heldout_mean": sum(w["r2_mean"] for w in weight) / len(weight),
               "weight_nearest_cosine_heldout_mean": sum(w["nearest_cosine_mean"] for w in weight) / len(weight)}
    for part in ("selector", "transform"):
        if f"recover_{part}" in result:
            for split, scores in result[f"recover_{part}"].items():
                summary[f"recover_{part}_{split}"] = sum(scores.values()) / len(scores)
    return summary


# --- Baselines on held-out tasks from the training teachers, each an exact combination of updates
# (core.adapter_math.combine_updates): with equal weights, the update_mean_teacher (the mean update B @ A,
# unlike the evaluation's factor_mean_teacher, the mean of A and of B). ---

def arithmetic_pairs(pairs: dict[str, tuple[str, str]], training: list[str], heldout: str) -> tuple[str, str, str] | None:
    """For held-out (s, t): seen pairs (s, t'), (s', t), (s', t') with W(s,t') + W(s',t) - W(s',t'), the
    first in the family's order; None where no such triple is seen."""
    s, t = pairs[heldout]
    named = {pair: name for name, pair in pairs.items() if name in training}
    for s2 in dict.fromkeys(p[0] for p in pairs.values()):
        for t2 in dict.fromkeys(p[1] for p in pairs.values()):
            if s2 != s and t2 != t and all(k in named for k in ((s, t2), (s2, t), (s2, t2))):
                return named[(s, t2)], named[(s2, t)], named[(s2, t2)]
    return None


def teacher_baselines(cfg: Config, tasks: list[Task], split: Split, base_dir: Path, teachers_dir: Path, embeddings_dir: Path,
                      adapters_dir: Path) -> dict[str, dict[str, float]]:
    """Per held-out task, the accuracy of: the mean update of the training teachers (update_mean_teacher), the
    nearest training teacher by prompt embedding, the k nearest weighted by similarity, and (compositional
    family) task arithmetic; each saved as a PEFT directory and measured through PeftModel.from_pretrained."""
    training, heldout = split_tasks(split, tasks)
    tokenizer = load_tokenizer(base_dir)
    final = final_checkpoints(teachers_dir)
    model_config = load_base(base_dir, cfg.base.dtype, device="cpu").config
    teachers = {t.name: load_adapter_tensors(final[t.name], lora_layout(model_config, cfg.lora), cfg.lora)
                for t in training}
    cache = EmbeddingCache.load(embeddings_dir)
    count = cfg.diagnostics.readout_prompts
    references = {t.name: cache.lookup([r.condition for r in t.train[:count]]).mean(0) for t in training}
    pairs = task_pairs(cfg.tasks)

    def measure(names: list[str], weights: list[float], task: Task, label: str) -> float:
        out = Path(adapters_dir) / task.name / label
        k = len(names)
        lora = LoraConfig(rank=cfg.lora.rank * k, alpha=cfg.lora.alpha * k, target_modules=list(cfg.lora.target_modules))
        save_adapter(load_base(base_dir, cfg.base.dtype), combine_updates([teachers[n] for n in names], weights),
                     lora_layout(model_config, lora), lora, out)
        loaded = PeftModel.from_pretrained(load_base(base_dir, cfg.base.dtype), str(out)).eval()
        return task_accuracy(loaded, tokenizer, task, "test")

    result: dict[str, dict[str, float]] = {}
    for task in heldout:
        query = cache.lookup([r.condition for r in task.test[:count]]).mean(0)
        ranked = cosine_ranking(query, references)[: cfg.diagnostics.nearest_k]
        total = sum(score for _, score in ranked)
        names = [t.name for t in training]
        row = {"update_mean_teacher": measure(names, [1.0 / len(names)] * len(names), task, "update_mean_teacher"),
               "nearest_teacher": measure([ranked[0][0]], [1.0], task, "nearest_teacher"),
               "knearest_teachers": measure([n for n, _ in ranked], [s / total for _, s in ranked], task,
                                            "knearest_teachers")}
        triple = arithmetic_pairs(pairs, names, task.name) if pairs else None
        if triple:
            row["task_arithmetic"] = measure(list(triple), [1.0, 1.0, -1.0], task, "task_arithmetic")
        result[task.name] = row
    return result


def baselines_summary(baselines: dict[str, dict[str, float]], tasks: list[Task]) -> dict:
    """Per baseline, mean held-out accuracy and mean distance above chance (over the tasks it covers)."""
    chance = {t.name: t.chance for t in tasks}
    summary = {}
    for method in dict.fromkeys(m for row in baselines.values() for m in row):
        covered = [name for name, row in baselines.items() if method in row]
        summary[f"{method}_heldout_accuracy_mean"] = sum(baselines[n][method] for n in covered) / len(covered)
        summary[f"{method}_heldout_above_chance"] = sum(baselines[n][method] - chance[n] for n in covered) / len(covered)
    return summary


def markdown_report(summary: dict, result: dict) -> str:
    """The testbed's headroom per held-out task and on average: what every generator is measured against."""
    heldout = list(result["chance"])
    baselines = result["baselines"]
    methods = list(dict.fromkeys(m for row in baselines.values() for m in row))
    recover = [part for part in ("selector", "transform") if f"recover_{part}" in result["structure"]]

    def cell(value: float | None) -> str:
        return "—" if value is None else f"{value:.3f}"

    header = ["task", "chance", "base", "multi-task LoRA", *(m.replace("_", " ") for m in methods),
              "weight R²", "nearest weight cosine", *(f"{part} recovered" for part in recover)]
    lines = ["# Diagnostics of the testbed", "",
             "Held-out tasks (never trained on): accuracy of the base, the multi-task LoRA reference and the "
             "baselines built from training teachers (each loaded through PEFT); how much of each held-out "
             "teacher's update the training teachers' updates explain (least squares R², per target module, "
             "mean); and how often a ridge read-out on the frozen encoder's prompt embeddings, fitted on the "
             "training tasks, names the held-out task's selector and transform.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    weight = result["structure"]["weight_space"]
    for name in heldout:
        row = [name, cell(result["chance"][name]), cell(result["base"]["heldout"][name]),
               cell(result["multitask"]["heldout"][name]), *(cell(baselines[name].get(m)) for m in methods),
               cell(weight[name]["r2_mean"]), cell(weight[name]["nearest_cosine_mean"]),
               *(cell(result["structure"][f"recover_{part}"]["heldout"][name]) for part in recover)]
        lines.append("| " + " | ".join(row) + " |")
    mean = ["**mean**", cell(summary["heldout_chance_mean"]), cell(summary["base_heldout_accuracy_mean"]),
            cell(summary["multitask_heldout_accuracy_mean"]),
            *(cell(summary.get(f"{m}_heldout_accuracy_mean")) for m in methods),
            cell(summary["weight_r2_heldout_mean"]), cell(summary["weight_nearest_cosine_heldout_mean"]),
            *(cell(summary.get(f"recover_{part}_heldout")) for part in recover)]
    lines += ["| " + " | ".join(mean) + " |", "",
              f"Multi-task LoRA on its {len(result['multitask']['seen'])} training tasks: "
              f"{summary['multitask_seen_accuracy_mean']:.3f} mean accuracy."]
    primitives = [f"{kind}s alone {summary[f'base_{kind}_primitive_accuracy_mean']:.3f}"
                  for kind in ("selector", "transform") if f"base_{kind}_primitive_accuracy_mean" in summary]
    if primitives:
        lines.append(f"Base on the primitives it was pre-trained on: {', '.join(primitives)} mean accuracy.")
    return "\n".join(lines) + "\n"


def run(cfg: Config) -> None:
    tasks, split = load_tasks(TASKS_FILE), Split.load(SPLIT_FILE)
    with atomic_dir(DIAGNOSTICS_DIR) as out:
        result = headroom(cfg, tasks, split, BASE_DIR, out)
        result["baselines"] = teacher_baselines(cfg, tasks, split, BASE_DIR, TEACHERS_DIR, EMBEDDINGS_DIR,
                                                out / "baselines")
    result["structure"] = structure(cfg, tasks, split, BASE_DIR, TEACHERS_DIR, EMBEDDINGS_DIR)
    summary = {**headroom_summary(result, tasks, split), **baselines_summary(result["baselines"], tasks),
               **structure_summary(result["structure"])}
    write_json_atomic(RESULTS_DIR / "diagnostics" / "metrics.json", summary)
    write_json_atomic(RESULTS_DIR / "diagnostics" / "per_task.json", result)
    DIAGNOSTICS_REPORT.write_text(markdown_report(summary, result))
    for key, value in summary.items():
        print(f"{key}: {value:.3f}")
