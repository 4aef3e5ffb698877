"""Probe sets: the texts a delta is measured on. Their texts, formatting and max length are part of a
delta's identity: the cache stores them and training reuses exactly those."""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from llgbm.data.tasks import Task, TasksConfig, generic_texts
from llgbm.infra.errors import LlgbmError
from llgbm.infra.io import sha256_json, write_json_atomic

PROBE_TYPES = ("generic", "task")
PROBE_TEMPLATES = ("raw", "chat")


@dataclass
class ProbesConfig:
    seed: int = 0
    types: list[str] = field(default_factory=lambda: list(PROBE_TYPES))
    template: str = "raw"  # "chat" applies the tokenizer's chat template (instruction-tuned bases)
    max_length: int = 32
    # True: probe_count counts per training task; each probe type gives probe_count x (training tasks)
    # probes, task probes round-robin so that every training task gives probe_count of its own.
    per_task: bool = False


@dataclass(frozen=True)
class ProbeSet:
    texts: tuple[str, ...]  # exactly what the tokenizer sees, after the template was applied
    template: str
    max_length: int

    def identity(self) -> dict:
        return {"texts": list(self.texts), "template": self.template, "max_length": self.max_length}

    def fingerprint(self) -> str:
        return sha256_json(self.identity())

    @classmethod
    def from_identity(cls, identity: dict) -> "ProbeSet":
        return cls(tuple(identity["texts"]), identity["template"], identity["max_length"])


def _task_candidates(tasks: list[Task], rng: random.Random) -> list[str]:
    """Train prompts, taken round-robin across tasks so every task is represented early."""
    pools = [rng.sample([r.prompt for r in t.train], len(t.train)) for t in tasks]
    return [pool[i] for i in range(max(map(len, pools))) for pool in pools if i < len(pool)]


def _candidates(probe_type: str, count: int, training: list[Task], generic_length: int | None, seed: int,
                rng: random.Random) -> list[str]:
    if probe_type == "generic":
        if generic_length is None:
            raise LlgbmError("probes.types: 'generic' probes exist for the built-in tasks only; use 'task'")
        return generic_texts(count, generic_length, seed)
    if probe_type == "task":
        return _task_candidates(training, rng)
    raise LlgbmError(f"probes.types: unknown probe type '{probe_type}'")


def generic_length(tasks: TasksConfig) -> int | None:
    """The sequence length of generic probes, which exist in the built-in task world only."""
    return tasks.sequence_length if tasks.source == "builtin" else None


def apply_template(text: str, template: str, tokenizer: PreTrainedTokenizerBase) -> str:
    if template == "raw":
        return text
    if template == "chat":
        if not getattr(tokenizer, "chat_template", None):
            raise LlgbmError("probes.template: 'chat' needs a tokenizer with a chat template; use 'raw'")
        return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                             add_generation_prompt=True)
    raise LlgbmError(f"probes.template: unknown template '{template}'")


def build_probe_set(settings: ProbesConfig, probe_count: int, training: list[Task], generic_length: int | None,
                    tokenizer: PreTrainedTokenizerBase) -> ProbeSet:
    """Probes interleaving the listed probe types, formatted by the template: `probe_count` in all, or
    with settings.per_task, probe_count per training task and type. Task probes are training prompts
    only (no prompt of a held-out task reaches training), taken round-robin over the training tasks;
    generic probes (the built-in world's task-free text) need `generic_length`, its sequence length."""
    count = probe_count * len(training) * len(settings.types) if settings.per_task else probe_count
    rng = random.Random(f"{settings.seed}:probes")
    pools = [_candidates(t, count, training, generic_length, settings.seed, rng) for t in settings.types]
    interleaved = [pool[i] for i in range(count) for pool in pools if i < len(pool)]
    if len(interleaved) < count:
        raise LlgbmError(f"probe_count: {count} probes asked for, only {len(interleaved)} available")
    texts = [apply_template(t, settings.template, tokenizer) for t in interleaved[:count]]
    return ProbeSet(tuple(texts), settings.template, settings.max_length)


def _evaluation_candidates(tasks: list[Task], heldout: list[str], rng: random.Random) -> list[str]:
    """Test prompts that are no task's train prompt (the built-in generator can draw one into both
    splits), round-robin over the tasks: held-out tasks first, so each gives probes even when there are
    fewer probes than tasks, then the rest in a seeded order."""
    seen = {r.prompt for t in tasks for r in t.train}
    rest = [t for t in tasks if t.name not in heldout]
    ordered = [t for t in tasks if t.name in heldout] + rng.sample(rest, len(rest))
    pools = []
    for task in ordered:
        prompts = list(dict.fromkeys(r.prompt for r in task.test if r.prompt not in seen))
        pools.append(rng.sample(prompts, len(prompts)))
    return list(dict.fromkeys(pool[i] for i in range(max(map(len, pools), default=0)) for pool in pools if i < len(pool)))


def evaluation_candidates(count: int, seed: int, tasks: list[Task], heldout: list[str]) -> list[str]:
    """The evaluation probes' candidate texts in draw order; fewer than `count` is an error (the check
    stage calls this before any training)."""
    candidates = _evaluation_candidates(tasks, heldout, random.Random(f"{seed}:evaluation-probes"))
    if len(candidates) < count:
        raise LlgbmError(f"evaluate.probe_count: {count} evaluation probes asked for, only {len(candidates)} test "
                         "prompts are no task's train prompt (tasks that share prompts leave none)")
    return candidates


def build_evaluation_probe_set(settings: ProbesConfig, count: int, seed: int, tasks: list[Task], heldout: list[str],
                               tokenizer: PreTrainedTokenizerBase) -> ProbeSet:
    """The evaluation probe set: `count` test-split prompts of every task (held-out ones included), no
    train prompt of any task, formatted with the training probes' template and max length. Generic
    probes are not used: they are training probes."""
    candidates = evaluation_candidates(count, seed, tasks, heldout)
    texts = [apply_template(t, settings.template, tokenizer) for t in candidates[:count]]
    return ProbeSet(tuple(texts), settings.template, settings.max_length)


def training_texts(tasks: list[Task], probes: ProbeSet, tokenizer: PreTrainedTokenizerBase) -> set[str]:
    """Every text training can see, as a probe would be formatted: the training probes and every task's
    train prompts (which include the KL reference's answer prompts)."""
    return {*probes.texts, *(apply_template(r.prompt, probes.template, tokenizer) for t in tasks for r in t.train)}


def assert_disjoint(evaluation: ProbeSet, seen: set[str]) -> None:
    """An evaluation probe that training saw would make an out-of-sample metric in-sample: an error."""
    shared = [t for t in evaluation.texts if t in seen]
    if shared:
        raise LlgbmError(f"evaluate: {len(shared)} evaluation probe(s) are training texts, e.g. {shared[0]!r}")


def tokenize_probes(probes: ProbeSet, tokenizer: PreTrainedTokenizerBase) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded input_ids and attention_mask (P, T); a probe's last real token is at length - 1."""
    if tokenizer.padding_side != "right":
        raise LlgbmError("probes: the tokenizer must pad on the right")
    encoded = tokenizer(list(probes.texts), return_tensors="pt", padding=True, truncation=True,
                        max_length=probes.max_length, add_special_tokens=probes.template == "raw")
    if (encoded["attention_mask"].sum(-1) == 0).any():
        raise LlgbmError("probes: a probe text tokenizes to nothing")
    return encoded["input_ids"], encoded["attention_mask"]


@dataclass(frozen=True)
class AnswerPrompts:
    """The KL reference's prompts: a fixed sample of each task's own training prompts, at whose answer
    position the teacher's next-token distribution is the target (top_k > 0: its top k plus the rest)."""
    prompts: dict[str, tuple[str, ...]]
    top_k: int

    def identity(self) -> dict:
        return {"prompts": {name: list(texts) for name, texts in self.prompts.items()}, "top_k": self.top_k}

    def fingerprint(self) -> str:
        return sha256_json(self.identity())

    def save(self, path: Path) -> None:
        write_json_atomic(path, self.identity())

    def batch(self, task_names: list[str], tokenizer: PreTrainedTokenizerBase) -> tuple[torch.Tensor, torch.Tensor]:
        """input_ids and attention_mask (len(task_names), K, T), right-padded to one width for every task
        (so a task's rows do not depend on its batch companions)."""
        names = sorted(self.prompts)
        encoded = tokenizer([p for name in names for p in self.prompts[name]], return_tensors="pt", padding=True)
        count = len(self.prompts[names[0]])
        ids, mask = (encoded[k].view(len(names), count, -1) for k in ("input_ids", "attention_mask"))
        rows = torch.tensor([names.index(name) for name in task_names])
        return ids[rows], mask[rows]


def answer_prompts(tasks: list[Task], count: int, top_k: int, seed: int) -> AnswerPrompts:
    """`count` training prompts of every task, drawn once from `seed`."""
    chosen = {}
    for task in tasks:
        if len(task.train) < count:
            raise LlgbmError(f"kl.prompts: task '{task.name}' has {len(task.train)} train prompts, fewer than {count}")
        chosen[task.name] = tuple(random.Random(f"{seed}:answers:{task.name}").sample([r.prompt for r in task.train], count))
    return AnswerPrompts(chosen, top_k)
