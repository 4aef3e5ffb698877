"""Task data: the built-in synthetic task family, user task files, and the tasks file the stages share.

Every built-in task shares one format, "task: <cue> items: <number words> answer:", with a number
word as the response. The cue reveals the task from the prompt alone, and each task's answers are
balanced over its options, so a model that ignores the input scores exactly chance (1 / options).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .config import TasksConfig
from .errors import LlgbmError
from .io import read_json, read_jsonl_lines, write_json_atomic

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
CUES = {
    "first": "first", "second": "second", "third": "third", "last": "last", "largest": "largest",
    "smallest": "smallest", "after_first": "after first", "before_last": "before last",
}
# Words of the task world's text beyond cues and number words: the tiny tokenizer's vocabulary.
FORMAT_WORDS = ("task:", "items:", "answer:")


@dataclass(frozen=True)
class Record:
    prompt: str
    response: str


@dataclass(frozen=True)
class Task:
    name: str
    options: tuple[str, ...]  # the answers a prediction is chosen among (multiple choice)
    train: tuple[Record, ...]
    test: tuple[Record, ...]

    @property
    def chance(self) -> float:
        return 1.0 / len(self.options)


def world_vocabulary() -> list[str]:
    cue_words = sorted({w for cue in CUES.values() for w in cue.split()})
    return [*FORMAT_WORDS, *cue_words, *WORDS]


def format_prompt(cue: str | None, items: list[int]) -> str:
    head = f"task: {cue} " if cue else ""
    return f"{head}items: {' '.join(WORDS[i] for i in items)} answer:"


def _distinct(rng: random.Random, n: int, allowed: list[int]) -> list[int]:
    return rng.sample(allowed, n)


def _items_for(task: str, answer: int, length: int, rng: random.Random) -> list[int]:
    """Draw a sequence of `length` digits whose answer under `task` is `answer`."""
    if task in ("first", "second", "third", "last", "after_first", "before_last"):
        anchor = {"after_first": (answer - 1) % 10, "before_last": (answer + 1) % 10}.get(task, answer)
        rest = _distinct(rng, length - 1, [d for d in range(10) if d != anchor])
        position = {"first": 0, "after_first": 0, "second": 1, "third": 2}.get(task, length - 1)
        return rest[:position] + [anchor] + rest[position:]
    if task == "largest":
        items = [answer] + _distinct(rng, length - 1, list(range(answer)))
    elif task == "smallest":
        items = [answer] + _distinct(rng, length - 1, list(range(answer + 1, 10)))
    else:
        raise LlgbmError(f"unknown built-in task '{task}'")
    rng.shuffle(items)
    return items


def task_options(task: str, length: int) -> list[int]:
    if task == "largest":
        return list(range(length - 1, 10))
    if task == "smallest":
        return list(range(0, 11 - length))
    return list(range(10))


def _balanced_records(task: str, n: int, length: int, rng: random.Random, exclude: set[str]) -> list[Record]:
    options = task_options(task, length)
    records: list[Record] = []
    seen = set(exclude)
    attempts = 0
    while len(records) < n:
        attempts += 1
        if attempts > 100 * n:
            raise LlgbmError(f"task '{task}': cannot draw {n} distinct records; lower tasks.*_per_task")
        answer = options[len(records) % len(options)]
        prompt = format_prompt(CUES[task], _items_for(task, answer, length, rng))
        if prompt in seen:
            continue
        seen.add(prompt)
        records.append(Record(prompt, WORDS[answer]))
    rng.shuffle(records)
    return records


def builtin_tasks(cfg: TasksConfig, seed: int) -> list[Task]:
    tasks = []
    for index, name in enumerate(cfg.names):
        rng = random.Random(f"{seed}:{name}:{index}")
        train = _balanced_records(name, cfg.train_per_task, cfg.sequence_length, rng, set())
        test = _balanced_records(name, cfg.test_per_task, cfg.sequence_length, rng, {r.prompt for r in train})
        options = tuple(WORDS[d] for d in task_options(name, cfg.sequence_length))
        tasks.append(Task(name, options, tuple(train), tuple(test)))
    return tasks


def generic_texts(count: int, length: int, seed: int) -> list[str]:
    """Task-free text of the built-in world: number-word sequences, random or in runs."""
    rng = random.Random(f"{seed}:generic")
    texts = []
    for _ in range(count):
        kind = rng.randrange(3)
        if kind == 0:
            items = rng.sample(range(10), length)
        else:
            start, step = rng.randrange(10), 1 if kind == 1 else -1
            items = [(start + step * i) % 10 for i in range(length)]
        texts.append(format_prompt(None, items))
    return texts


def _parse_records(raw: object, path: Path, where: str, labels: list[str] | None = None) -> list[Record]:
    """Records {prompt, response} (other fields ignored). `where` names the list in errors, `labels` each
    item (default: '<where> record <index>')."""
    if not isinstance(raw, list):
        raise LlgbmError(f"{path}: {where} must be a list of records with string 'prompt' and 'response'")
    labels = labels or [f"{where} record {i}".removeprefix("the file ") for i in range(len(raw))]
    records = []
    for label, item in zip(labels, raw):
        if not (isinstance(item, dict) and isinstance(item.get("prompt"), str) and isinstance(item.get("response"), str)):
            raise LlgbmError(f"{path}: {label} needs string fields 'prompt' and 'response'")
        if not item["prompt"].strip():
            raise LlgbmError(f"{path}: {label} has an empty prompt")
        records.append(Record(item["prompt"], item["response"]))
    return records


def _check_name(name: object, path: Path, key: str) -> str:
    # Task names become directory names (models/teachers/<task>): no separators, nothing hidden.
    if not isinstance(name, str) or not name.strip() or "/" in name or "\\" in name or name.startswith("."):
        raise LlgbmError(f"{path}: '{key}' must be a non-empty string without '/' or '\\' that does not start "
                         f"with '.', got {name!r}")
    return name


def _check_options(options: object, path: Path, key: str) -> tuple[str, ...]:
    if not (isinstance(options, list) and options and all(isinstance(o, str) and o.strip() for o in options)
            and len(set(options)) == len(options)):
        raise LlgbmError(f"{path}: '{key}' must be a non-empty list of distinct non-empty strings")
    return tuple(options)


TASK_FILE_KEYS = ("name", "options", "records", "train", "test")


def load_task_file(path: Path, test_fraction: float, seed: int) -> Task:
    """A user task: JSONL of records, a JSON list of records, or a JSON object with name, records or
    train/test, and optional options (default: the distinct responses)."""
    path = Path(path)
    name = path.stem
    options = None
    if path.suffix == ".jsonl":
        lines = read_jsonl_lines(path, "task file")
        records = _parse_records([v for _, v in lines], path, "the file", [f"line {n}" for n, _ in lines])
        train, test = _split(records, test_fraction, seed, name)
    else:
        raw = read_json(path, "task file")
        if isinstance(raw, dict):
            unknown = [k for k in raw if k not in TASK_FILE_KEYS]
            if unknown:
                raise LlgbmError(f"{path}: unknown key '{unknown[0]}' (expected {', '.join(TASK_FILE_KEYS)})")
            name = _check_name(raw.get("name", name), path, "name")
            if "options" in raw:
                options = _check_options(raw["options"], path, "options")
            if "train" in raw or "test" in raw:
                if "records" in raw:
                    raise LlgbmError(f"{path}: give either 'records' or 'train'/'test', not both")
                train = _parse_records(raw.get("train", []), path, "'train'")
                test = _parse_records(raw.get("test", []), path, "'test'")
            else:
                train, test = _split(_parse_records(raw.get("records", []), path, "'records'"), test_fraction, seed, name)
        else:
            train, test = _split(_parse_records(raw, path, "the file"), test_fraction, seed, name)
    _check_name(name, path, "name")
    if not train or not test:
        raise LlgbmError(f"{path}: task has no prompts (needs records in both train and test splits)")
    responses = sorted({r.response for r in (*train, *test)})
    options = options or tuple(responses)
    missing = [r for r in responses if r not in options]
    if missing:
        raise LlgbmError(f"{path}: responses {missing[:3]} are not among the task's options")
    return Task(name, options, tuple(train), tuple(test))


def _split(records: list[Record], test_fraction: float, seed: int, name: str) -> tuple[list[Record], list[Record]]:
    shuffled = list(records)
    random.Random(f"{seed}:{name}:split").shuffle(shuffled)
    n_test = max(1, round(len(shuffled) * test_fraction)) if len(shuffled) > 1 else 0
    return shuffled[n_test:], shuffled[:n_test]


def make_tasks(cfg: TasksConfig) -> list[Task]:
    if cfg.source == "builtin":
        return builtin_tasks(cfg, cfg.seed)
    tasks = [load_task_file(Path(f), cfg.test_fraction, cfg.seed) for f in cfg.files]
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise LlgbmError(f"tasks.files: task names repeat: {names}")
    return tasks


def _task_to_json(task: Task) -> dict:
    as_list: Callable[[tuple[Record, ...]], list] = lambda rs: [{"prompt": r.prompt, "response": r.response} for r in rs]
    return {"name": task.name, "options": list(task.options), "train": as_list(task.train), "test": as_list(task.test)}


def save_tasks(tasks: list[Task], path: Path) -> None:
    write_json_atomic(path, {"tasks": [_task_to_json(t) for t in tasks]})


def load_tasks(path: Path) -> list[Task]:
    """The tasks file written by save_tasks, every field checked."""
    raw = read_json(path, "tasks file")
    if not (isinstance(raw, dict) and isinstance(raw.get("tasks"), list) and raw["tasks"]):
        raise LlgbmError(f"{path}: malformed tasks file (expected an object with a non-empty list 'tasks')")
    tasks = []
    for i, item in enumerate(raw["tasks"]):
        if not (isinstance(item, dict) and set(item) == {"name", "options", "train", "test"}):
            raise LlgbmError(f"{path}: malformed tasks file: tasks[{i}] needs exactly name, options, train and test")
        name = _check_name(item["name"], path, f"tasks[{i}].name")
        options = _check_options(item["options"], path, f"tasks[{i}].options")
        train = _parse_records(item["train"], path, f"'tasks[{i}].train'")
        test = _parse_records(item["test"], path, f"'tasks[{i}].test'")
        tasks.append(Task(name, options, tuple(train), tuple(test)))
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise LlgbmError(f"{path}: malformed tasks file: task names repeat: {names}")
    return tasks


def vocabulary(tasks: list[Task]) -> list[str]:
    """Every whitespace-separated word of the tasks' text, after the built-in world's words."""
    words = dict.fromkeys(world_vocabulary())
    for task in tasks:
        for record in (*task.train, *task.test):
            words.update(dict.fromkeys(record.prompt.split() + record.response.split()))
        for option in task.options:
            words.update(dict.fromkeys(option.split()))
    return list(words)


def pretraining_texts(cfg: TasksConfig, tasks: list[Task], count: int = 4096) -> list[str]:
    """Task-free text for the tiny base: generic world text, or the user's train prompts (never answers)."""
    if cfg.source == "builtin":
        return generic_texts(count, cfg.sequence_length, cfg.seed)
    return [r.prompt for task in tasks for r in task.train]


def training_tasks(tasks: list[Task], heldout: list[str]) -> list[Task]:
    """The tasks training may see: every task not held out (held-out names must be tasks)."""
    names = {t.name for t in tasks}
    unknown = [n for n in heldout if n not in names]
    if unknown:
        raise LlgbmError(f"heldout_tasks: {unknown} are not tasks of the tasks file")
    kept = [t for t in tasks if t.name not in heldout]
    if not kept:
        raise LlgbmError("heldout_tasks: every task is held out; nothing is left to train on")
    return kept
