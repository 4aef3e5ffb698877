"""The evaluation recipe: generated adapters on held-out and seen tasks against the base model, the
task's teacher, the factor-mean teacher (the mean of the training checkpoints' A and B) and the nearest
training teacher; every adapter saved as a PEFT directory and
measured from it by the batched hook path, checked against PEFT's own loading on the first task."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from llgbm.artifacts.adapters import ADAPTER_WEIGHTS, load_adapter_tensors, load_peft_model
from llgbm.artifacts.base_model import load_base, load_tokenizer
from llgbm.artifacts.delta_cache import DeltaCache, checked_probe_batch
from llgbm.artifacts.generator_files import LoadedGenerator, open_generator
from llgbm.artifacts.teacher_index import final_checkpoints, read_index
from llgbm.assembly.deltas import define_deltas
from llgbm.config import Config
from llgbm.core.adapter_math import mean_of_factors
from llgbm.core.delta import DeltaComputer, DeltaSpec, probe_states, reduce_delta
from llgbm.core.lora import LoraConfig, layout_of_model, lora_scaling, stack_adapters
from llgbm.core.scoring import adapted_task_accuracies, task_accuracy
from llgbm.core.similarity import nearest
from llgbm.data.conditions import evaluation_prompt_batches
from llgbm.data.encoder import EmbeddingCache
from llgbm.data.factors import below_chance, factor_means
from llgbm.data.probes import (
    ProbeSet,
    assert_disjoint,
    build_evaluation_probe_set,
    tokenize_probes,
    training_texts,
)
from llgbm.data.split import Split
from llgbm.data.tasks import Task, load_tasks, task_pairs
from llgbm.infra.errors import LlgbmError
from llgbm.infra.figures import grouped_bars
from llgbm.infra.io import atomic_dir, sha256_file, write_json_atomic
from llgbm.infra.paths import EVALUATION_ADAPTERS_DIR, RESULTS_DIR, TASKS_FILE, Paths

# factor_mean_teacher: the element-wise mean of A and of B over every training checkpoint
# (core.adapter_math.mean_of_factors); not the diagnostics' update_mean_teacher, the mean update B @ A.
METHODS = ("base", "generated", "teacher", "factor_mean_teacher", "nearest_teacher")
# The evaluated tasks: held out (the final figure), validation (kept out of training to choose
# hyperparameters on; validation_tasks) and seen (training tasks).
GROUPS = ("heldout", "validation", "seen")
GROUP_TITLES = {"heldout": "Held-out", "validation": "Validation", "seen": "Seen"}


# Accuracies are multiples of 1 / (test records): a gap this small only guards against float equality.
MIN_GAIN_GAP = 1e-6
# Per-task metrics that can be undefined (a zero delta has no direction; a teacher at the floor leaves no
# gain to share): the summary counts the tasks where each is defined instead of silently dropping them.
DEFINABLE = ("gain_share", "delta_cosine_train_probes", "delta_cosine_eval", "delta_cosine_eval_centred",
             "delta_norm_ratio_eval")
SUMMARISED = ("accuracy", "gain_share", "delta_cosine_eval", "delta_cosine_eval_centred", "delta_cosine_train_probes",
              "delta_mse_eval", "delta_norm_ratio_eval")
# The two probe sets a delta is measured on: the delta cache's (training's, so in-sample) and the
# evaluation probes (test-split prompts no training step saw).
PROBE_SETS = ("train_probes", "eval")


def cosine_or_none(delta: torch.Tensor, target: torch.Tensor) -> float | None:
    """The cosine of two deltas as flat vectors; None when either is zero (it has no direction)."""
    delta, target = delta.flatten(), target.flatten()
    if float(delta.norm()) == 0 or float(target.norm()) == 0:
        return None
    return float(torch.nn.functional.cosine_similarity(delta, target, dim=0))


def cosine_stats(deltas: list[torch.Tensor], target: torch.Tensor, name: str,
                 centre: torch.Tensor | None = None) -> dict:
    """Mean, std, min and max over deltas of their cosine to target, as `name`, `name`_std, ... (None where
    no cosine is defined). With `centre`, it is first subtracted from every delta and from the target: the
    centred cosine, agreement in what sets the target apart from the centre (e.g. the training teachers' mean delta)."""
    if centre is not None:
        deltas, target = [d - centre for d in deltas], target - centre
    defined = [c for c in (cosine_or_none(d, target) for d in deltas) if c is not None]
    stats = torch.tensor(defined) if defined else None
    return {
        name: float(stats.mean()) if defined else None,
        f"{name}_std": float(stats.std(unbiased=False)) if defined else None,
        f"{name}_min": float(stats.min()) if defined else None,
        f"{name}_max": float(stats.max()) if defined else None,
    }


def delta_alignment(deltas: list[torch.Tensor], target: torch.Tensor, where: str) -> dict:
    """Cosine statistics, MSE and norm ratio of deltas against the teacher's delta on one probe set (of
    any variant's shape, compared as flat vectors), named delta_cosine_<where>, delta_mse_<where>,
    delta_norm_ratio_<where>. A zero delta (the base model) has no direction: its cosine is None."""
    deltas, target = [d.flatten() for d in deltas], target.flatten()
    target_norm = float(target.norm())
    return {
        **cosine_stats(deltas, target, f"delta_cosine_{where}"),
        f"delta_mse_{where}": sum(float((d - target).square().mean()) for d in deltas) / len(deltas),
        f"delta_norm_ratio_{where}": (sum(float(d.norm()) for d in deltas) / len(deltas) / target_norm
                                      if target_norm > 0 else None),
    }


def gain_share(accuracy: float, base: float, teacher: float, chance: float,
               min_gap: float = MIN_GAIN_GAP) -> float | None:
    """(acc - floor) / (acc_teacher - floor) with floor = max(acc_base, chance): a base below chance is
    noise, not a level an adapter gains from. Undefined when the teacher is not above the floor."""
    floor = max(base, chance)
    gap = teacher - floor
    return (accuracy - floor) / gap if gap > min_gap else None


def _mean_defined(values: list[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return sum(defined) / len(defined) if defined else None


def summarise_methods(per_task: dict[str, dict], names: list[str],
                      pairs: dict[str, tuple[str, str]] | None = None) -> dict:
    """Per method, the mean over `names` of each summarised metric (over the tasks where it is defined),
    the number of tasks, per metric that can be undefined the number of tasks where it is defined, and the
    number of tasks below chance; with compositional `pairs`, the generated adapters' accuracy per selector
    and per transform."""
    summary = {
        "tasks": len(names),
        **{key: {m: _mean_defined([per_task[t][m][key] for t in names]) for m in METHODS} for key in SUMMARISED},
        "defined": {key: {m: sum(per_task[t][m][key] is not None for t in names) for m in METHODS}
                    for key in DEFINABLE},
        "below_chance": {m: len(below_chance({t: per_task[t][m]["accuracy"] for t in names},
                                             {t: per_task[t]["chance"] for t in names})) for m in METHODS},
    }
    if pairs:
        summary["by_factor"] = factor_means({t: per_task[t]["generated"]["accuracy"] for t in names}, pairs)
    return summary


def evaluation_probe_set(cfg: Config, tasks: list[Task], heldout: list[str], cache: DeltaCache,
                         tokenizer) -> ProbeSet:
    """The evaluation probes params define, checked against every text training can see."""
    probes = build_evaluation_probe_set(cfg.probes, cfg.evaluate.probe_count, cfg.evaluate.probe_seed, tasks,
                                        heldout, tokenizer)
    assert_disjoint(probes, training_texts(tasks, cache.probes, tokenizer))
    return probes


@dataclass(frozen=True)
class Measured:
    accuracy: float  # on the evaluated task's test records
    deltas: dict[str, torch.Tensor]  # per probe set (PROBE_SETS)


class AdapterMeter:
    """Measures adapters as saved (the tensors of their PEFT directories) through the batched hook path: every
    adapter measured on a task on its own rows of one forward per chunk of the task's test prompts
    (accuracy), and of one forward per probe set (deltas). `peft_measure` is the client's path it is
    checked against: `PeftModel.from_pretrained` on a fresh base."""

    def __init__(self, base_dir: Path, dtype: str, tokenizer: PreTrainedTokenizerBase,
                 probe_batches: dict[str, tuple[torch.Tensor, torch.Tensor]], spec: DeltaSpec, lora: LoraConfig):
        self.base_dir, self.dtype, self.tokenizer, self.spec, self.lora = base_dir, dtype, tokenizer, spec, lora
        self.model = load_base(base_dir, dtype)
        self.layout, self.scaling = layout_of_model(self.model, lora), lora_scaling(lora)
        self.probe_batches = probe_batches
        self.computers = {where: DeltaComputer(self.model, self.layout, self.scaling, ids, mask, spec=spec)
                          for where, (ids, mask) in probe_batches.items()}

    def _base_deltas(self) -> dict[str, torch.Tensor]:
        return {where: reduce_delta(c.base_states[None], c.base_states, self.spec)[0].cpu()
                for where, c in self.computers.items()}

    @torch.no_grad()
    def measure(self, adapter_dirs: list[Path | None], task: Task) -> list[Measured]:
        """Each adapter's accuracy on `task` and deltas (None: the base itself, whose deltas are zero), all
        adapters in one batch."""
        measured: dict[Path | None, Measured] = {}
        if None in adapter_dirs:
            measured[None] = Measured(task_accuracy(self.model, self.tokenizer, task, "test"), self._base_deltas())
        dirs = list(dict.fromkeys(d for d in adapter_dirs if d is not None))
        if dirs:
            device = next(self.model.parameters()).device
            batch = {name: (a.to(device), b.to(device)) for name, (a, b) in stack_adapters(
                [load_adapter_tensors(d, self.layout, self.lora) for d in dirs]).items()}
            accuracies = adapted_task_accuracies(self.model, self.layout, batch, self.scaling, self.tokenizer, task)
            deltas = {where: computer(batch).cpu() for where, computer in self.computers.items()}
            for j, directory in enumerate(dirs):
                measured[directory] = Measured(accuracies[j].item(), {where: d[j] for where, d in deltas.items()})
        return [measured[d] for d in adapter_dirs]

    def peft_measure(self, adapter_dir: Path | None, task: Task) -> Measured:
        """The oracle: the adapter loaded by PEFT into a fresh base, scored and probed as a client would."""
        model = load_base(self.base_dir, self.dtype)
        if adapter_dir is not None:
            model = load_peft_model(model, adapter_dir)
        deltas = {where: reduce_delta(probe_states(model, ids, mask, self.spec.layers)[None],
                                      self.computers[where].base_states.cpu(), self.spec)[0]
                  for where, (ids, mask) in self.probe_batches.items()}
        return Measured(task_accuracy(model, self.tokenizer, task, "test"), deltas)


def check_against_peft(meter: AdapterMeter, adapter_dirs: list[Path | None], measured: list[Measured], task: Task,
                       dtype: str) -> None:
    """The batched path must give what PEFT gives: deltas within 1e-4 of their norm and accuracy within one
    test record (an argmax may flip on a near-tie) in float32; 0.1 and 5% of the records in a 16-bit dtype,
    whose two paths round in different orders."""
    delta_tolerance, records_off = (1e-4, 1.0) if dtype == "float32" else (0.1, 0.05 * len(task.test))
    for directory, batched in zip(adapter_dirs, measured):
        oracle = meter.peft_measure(directory, task)
        far = [where for where in oracle.deltas
               if (batched.deltas[where] - oracle.deltas[where]).norm() > delta_tolerance * max(oracle.deltas[where].norm(), 1e-6)]
        if far or abs(batched.accuracy - oracle.accuracy) * len(task.test) > records_off + 1e-6:
            raise LlgbmError(f"{directory or 'the base'}: the batched evaluation disagrees with PEFT on task "
                             f"'{task.name}' (accuracy {batched.accuracy:.4f} vs {oracle.accuracy:.4f}; deltas "
                             f"{far or 'agree'}); the batched LoRA forward no longer matches PEFT's")


@dataclass(frozen=True)
class References:
    """What every task's generated adapters are compared with: the teachers' final checkpoints, the
    factor-mean teacher's directory, and each training task's mean train-prompt embedding (for the nearest
    teacher)."""
    final: dict[str, Path]
    factor_mean_dir: Path
    task_means: dict[str, torch.Tensor]


def measure_task(task: Task, meter: AdapterMeter, loaded: LoadedGenerator, refs: References,
                 embeddings: EmbeddingCache, prompt_batches: int, out_dir: Path,
                 seed: int) -> tuple[dict[str, list[Measured]], list[str], dict[Path | None, Measured]]:
    """Every method's measurements on `task` (generated: one adapter per batch of its test prompts, each
    saved under out_dir), the nearest training task of each batch, and each adapter measured (once)."""
    if len(task.test) < loaded.prompts:
        raise LlgbmError(f"task '{task.name}': {len(task.test)} test prompts, the generator takes {loaded.prompts}")
    generated, nearest_names = [], []
    for k, prompts in enumerate(evaluation_prompt_batches(task, loaded.prompts, prompt_batches, seed)):
        condition = embeddings.lookup(prompts)
        adapter_dir = out_dir / f"generated-{k}"
        loaded.save(loaded.tensors(condition), adapter_dir)
        generated.append(adapter_dir)
        nearest_names.append(nearest(condition.mean(0), refs.task_means))  # by cosine of the mean embeddings
    nearest_dirs = [refs.final[name] for name in nearest_names]
    # The nearest teacher is often the task's own, or repeats: each adapter is measured once.
    unique = list(dict.fromkeys([None, refs.final[task.name], refs.factor_mean_dir, *generated, *nearest_dirs]))
    measured = dict(zip(unique, meter.measure(unique, task)))
    results = {"base": [measured[None]], "teacher": [measured[refs.final[task.name]]],
               "factor_mean_teacher": [measured[refs.factor_mean_dir]], "generated": [measured[d] for d in generated],
               "nearest_teacher": [measured[d] for d in nearest_dirs]}
    return results, nearest_names, measured


def check_teacher_against_cache(teacher_dir: Path, teacher_delta: torch.Tensor, cache: DeltaCache) -> None:
    """The PEFT-loaded teacher's delta on the cache's probes must be the cached one."""
    cached = cache.get(cache.key_for(sha256_file(teacher_dir / ADAPTER_WEIGHTS)))
    # The cache is in training's precision and PEFT's path in full precision: under bf16 only a
    # coarse agreement is expected (a stale cache is still far off).
    tolerance = 1e-4 if cache.definition["precision"] == "no" else 0.1
    if (teacher_delta - cached).norm() > tolerance * cached.norm():
        raise LlgbmError(f"{teacher_dir}: PEFT-loaded delta disagrees with the delta cache; rerun the deltas stage")


def task_row(task: Task, results: dict[str, list[Measured]], nearest_names: list[str], group: str) -> dict:
    """A task's per_task.json entry: its group (GROUPS), per method accuracy, gain share and delta
    alignment to the teacher."""
    teacher = results["teacher"][0].deltas
    accuracy = {m: sum(r.accuracy for r in results[m]) / len(results[m]) for m in METHODS}
    return {
        "group": group, "heldout": group == "heldout", "chance": task.chance, "nearest_tasks": nearest_names,
        **{m: {"accuracy": accuracy[m],
               "gain_share": gain_share(accuracy[m], accuracy["base"], accuracy["teacher"], task.chance),
               **{key: value for where in PROBE_SETS
                  for key, value in delta_alignment([r.deltas[where] for r in results[m]], teacher[where],
                                                    where).items()}}
           for m in METHODS},
    }


def run_evaluation(cfg: Config, tasks: list[Task], paths: Paths, adapters_dir: Path,
                   prompt_batches: int) -> tuple[dict, dict]:
    """Generate adapters for every task from prompt batches of its test split, save every compared adapter
    as a PEFT directory, and measure each from its saved tensors through the batched hook path (a task's
    adapters together): accuracy, and its delta on the cache's probes and on the evaluation probes. The
    first task's adapters are measured through `PeftModel.from_pretrained` on a fresh base as well, and
    must agree (`check_against_peft`)."""
    adapters_dir = Path(adapters_dir)
    tokenizer = load_tokenizer(paths.base)
    cache = DeltaCache.load(paths.deltas)
    split = Split.load(paths.split)
    training, heldout = split.training_tasks(tasks), list(split.heldout)
    definition = define_deltas(cfg, tasks, training, paths.base, tokenizer)
    probe_batches = {"train_probes": checked_probe_batch(cache, definition.probes, tokenizer, paths.base),
                     "eval": tokenize_probes(evaluation_probe_set(cfg, tasks, heldout, cache, tokenizer), tokenizer)}
    loaded = open_generator(paths.generator, paths.base)
    for key, names in (("heldout_tasks", heldout), ("validation_tasks", list(split.validation))):
        if sorted(loaded.meta.get(key, [])) != sorted(names):
            raise LlgbmError(f"{paths.generator}: trained with {key} {loaded.meta.get(key, [])}, the split says "
                             f"{names}; rerun the train stage")
    embeddings = EmbeddingCache.load(paths.embeddings)
    train_names = {t.name for t in training}
    refs = References(final_checkpoints(paths.teachers), adapters_dir / "factor_mean_teacher",
                      {t.name: embeddings.lookup([r.condition for r in t.train]).mean(0) for t in training})
    meter = AdapterMeter(paths.base, cfg.base.dtype, tokenizer, probe_batches, definition.spec, loaded.lora)
    loaded.save(mean_of_factors([load_adapter_tensors(paths.teachers / c["path"], loaded.layout, loaded.lora)
                              for c in read_index(paths.teachers) if c["task"] in train_names]), refs.factor_mean_dir)
    per_task: dict[str, dict] = {}
    eval_deltas: dict[str, dict[str, list[torch.Tensor]]] = {}  # task -> method -> deltas on the evaluation probes
    # Held-out, validation and training tasks: with max_training_tasks, the other tasks are none of them.
    group_of = {**{n: "seen" for n in train_names}, **{n: "validation" for n in split.validation},
                **{n: "heldout" for n in heldout}}
    evaluated = [t for t in tasks if t.name in group_of]
    for task in sorted(evaluated, key=lambda t: (GROUPS.index(group_of[t.name]), t.name)):
        results, nearest_names, measured = measure_task(task, meter, loaded, refs, embeddings, prompt_batches,
                                                        adapters_dir / task.name, cfg.seed)
        if not per_task:  # the first task's adapters (a held-out one's) through PEFT as well
            check_against_peft(meter, list(measured), list(measured.values()), task, cfg.base.dtype)
        check_teacher_against_cache(refs.final[task.name], results["teacher"][0].deltas["train_probes"], cache)
        per_task[task.name] = task_row(task, results, nearest_names, group_of[task.name])
        eval_deltas[task.name] = {m: [r.deltas["eval"] for r in results[m]] for m in METHODS}
        print(f"{task.name:>12} ({GROUP_TITLES[group_of[task.name]].lower()}): "
              + ", ".join(f"{m} {per_task[task.name][m]['accuracy']:.3f}" for m in METHODS), flush=True)
    add_centred_cosines(per_task, eval_deltas, [t.name for t in training])
    pairs = task_pairs(cfg.tasks)
    summary = {group: summarise_methods(per_task, [t for t, row in per_task.items() if row["group"] == group], pairs)
               for group in GROUPS if group != "validation" or split.validation}
    return {**summary, "train_tasks": len(training)}, per_task


def add_centred_cosines(per_task: dict[str, dict], eval_deltas: dict[str, dict[str, list[torch.Tensor]]],
                        training: list[str]) -> None:
    """delta_cosine_eval_centred per task and method, centred on the mean of the training teachers' deltas
    (not the delta of the mean adapter): what every task's teacher shares, which a raw cosine rewards in any
    teacher-like adapter."""
    centre = torch.stack([eval_deltas[name]["teacher"][0] for name in training]).mean(0)
    for name, row in per_task.items():
        for m in METHODS:
            row[m].update(cosine_stats(eval_deltas[name][m], eval_deltas[name]["teacher"][0],
                                       "delta_cosine_eval_centred", centre))


# The report's columns after the accuracies: (metric, header), each for the generated adapters.
REPORT_COLUMNS = (("gain_share", "gain share"), ("delta_cosine_eval", "delta cosine, eval probes"),
                  ("delta_cosine_eval_centred", "centred delta cosine, eval probes"),
                  ("delta_cosine_train_probes", "delta cosine, training probes"))


def markdown_report(summary: dict, per_task: dict) -> str:
    def cell(value) -> str:
        return "—" if value is None else f"{value:.3f}"

    lines = ["# Evaluation", "",
             "Accuracy on each task's test records (multiple choice over the task's options); generated adapters "
             "come from prompt batches of the test split; held-out and validation tasks were never seen in training "
             "(hyperparameters are chosen on the validation tasks, never on the held-out ones). Gain share "
             "is (acc - floor) / (teacher - floor) with floor = max(base, chance). Delta cosines compare an "
             "adapter's delta with its task teacher's: on the evaluation probes (test-split prompts no training "
             "step saw), also centred (the mean delta of the "
             f"{summary['train_tasks']} training teachers subtracted from both), and on the delta cache's "
             "training probes (in-sample). The last four columns are the generated adapters'; a mean is over the "
             "tasks where the value is defined, their count in parentheses.", ""]
    for split in GROUPS:
        names = [t for t, row in per_task.items() if row["group"] == split]
        if not names:
            continue
        means = summary[split]
        lines += [f"## {GROUP_TITLES[split]} tasks", "",
                  "| task | chance | " + " | ".join(METHODS) + " | " + " | ".join(h for _, h in REPORT_COLUMNS) + " |",
                  "|---|---|" + "---|" * (len(METHODS) + len(REPORT_COLUMNS))]
        for t in names:
            row = per_task[t]
            lines.append(f"| {t} | {row['chance']:.3f} | " + " | ".join(cell(row[m]["accuracy"]) for m in METHODS)
                         + " | " + " | ".join(cell(row["generated"][key]) for key, _ in REPORT_COLUMNS) + " |")
        lines.append("| **mean** | | " + " | ".join(cell(means["accuracy"][m]) for m in METHODS) + " | "
                     + " | ".join(f"{cell(means[key]['generated'])} ({means['defined'][key]['generated']}/{means['tasks']})"
                                  for key, _ in REPORT_COLUMNS) + " |")
        lines.append("| below chance (tasks) | | " + " | ".join(str(means["below_chance"][m]) for m in METHODS)
                     + " |" + " |" * len(REPORT_COLUMNS))
        lines.append("")
        for factor, means_by_part in means.get("by_factor", {}).items():
            lines += [f"Generated adapters' accuracy by {factor}: "
                      + ", ".join(f"{part} {value:.3f}" for part, value in means_by_part.items()) + ".", ""]
    return "\n".join(lines)


def accuracy_rows(per_task: dict) -> list[dict]:
    return [{"label": f"{t} / {m}", "task": t, "method": m, "accuracy": row[m]["accuracy"]}
            for t, row in per_task.items() for m in METHODS]


def run(cfg: Config) -> None:
    with atomic_dir(EVALUATION_ADAPTERS_DIR) as adapters:
        summary, per_task = run_evaluation(cfg, load_tasks(TASKS_FILE), Paths.pipeline(), adapters,
                                           cfg.evaluate.prompt_batches)
    out = RESULTS_DIR / "evaluate"
    write_json_atomic(out / "metrics.json", summary)
    write_json_atomic(out / "per_task.json", per_task)
    (out / "report.md").write_text(markdown_report(summary, per_task))
    (out / "plots").mkdir(parents=True, exist_ok=True)
    with open(out / "plots" / "accuracy.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["label", "task", "method", "accuracy"])
        writer.writeheader()
        writer.writerows(accuracy_rows(per_task))
    grouped_bars({f"{task} ({GROUP_TITLES[row['group']].lower()})": {m: row[m]["accuracy"] for m in METHODS}
                  for task, row in per_task.items()}, out / "accuracy.png", "accuracy per task and method", "accuracy")
