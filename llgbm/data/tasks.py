"""Task data: the built-in synthetic task family, user task files, and the tasks file the stages share.

Every built-in task shares one format, "task: <cue> items: <number words> answer:", with a number
word as the response. The cue reveals the task from the prompt alone, and each task's answers are
balanced over its options, so a model that ignores the input scores exactly chance (1 / options).

Two built-in families: "eight" (eight unrelated selections) and "compositional", where a task is a pair
(selector, transform) answered by transform(selected item) mod 10, its cue naming both parts in words
("task: largest plus two items: ... answer:"), so tasks share parts a generator can generalise over.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from llgbm.infra.errors import LlgbmError
from llgbm.infra.io import read_json, read_jsonl_lines, write_json_atomic

BUILTIN_TASKS = (
    "first", "second", "third", "last", "largest", "smallest", "after_first", "before_last",
)
TASK_FAMILIES = ("eight", "compositional")
# The compositional family: a task is a (selector, transform) pair named "<selector>_<transform>".
SELECTORS = ("first", "second", "third", "fourth", "penultimate", "last", "largest", "smallest", "second_largest",
             "second_smallest", "median")
TRANSFORMS = ("same", "plus_one", "plus_two", "plus_three", "plus_four", "plus_five", "minus_one", "minus_two",
              "minus_three", "minus_four", "mirror")
# Order statistics by default: the tiny base learns them (and every transform) from primitive texts in a
# few thousand steps, while positional selectors (first, ..., last) stay near chance at that budget.
DEFAULT_SELECTORS = ("smallest", "second_smallest", "median", "second_largest", "largest")
# Not "same": a "<selector> same" task is the selector primitive the base is pre-trained on.
DEFAULT_TRANSFORMS = ("plus_one", "plus_two", "plus_three", "plus_four", "plus_five", "minus_one", "minus_two",
                      "minus_three", "minus_four", "mirror")


@dataclass
class TasksConfig:
    # "builtin" generates the synthetic task family; otherwise `files` names JSON/JSONL task files.
    source: str = "builtin"
    # Built-in family: "eight" (the tasks in `names`) or "compositional" (every selector x transform pair).
    family: str = "eight"
    seed: int = 0
    names: list[str] = field(default_factory=lambda: list(BUILTIN_TASKS))
    selectors: list[str] = field(default_factory=lambda: list(DEFAULT_SELECTORS))
    transforms: list[str] = field(default_factory=lambda: list(DEFAULT_TRANSFORMS))
    files: list[str] = field(default_factory=list)  # with source files: names of files in data/tasks/
    train_per_task: int = 256
    test_per_task: int = 120
    test_fraction: float = 0.2  # for user files: share of each task's records held out as test
    sequence_length: int = 5
    # Where a built-in task's cue ("task: <selector> <transform>") goes: "prompt" (the adapted model reads
    # it, so one adapter can serve every task) or "generator" (only the generator reads it; the adapted
    # model sees the items alone, so only a generated adapter can carry the task).
    cue: str = "prompt"


CUE_PLACES = ("prompt", "generator")

def compositional_pairs(selectors: list[str], transforms: list[str]) -> dict[str, tuple[str, str]]:
    """{task name: (selector, transform)} for every pair, selector-major."""
    return {f"{s}_{t}": (s, t) for s in selectors for t in transforms}


def builtin_task_names(cfg: TasksConfig) -> list[str]:
    if cfg.family == "compositional":
        return list(compositional_pairs(cfg.selectors, cfg.transforms))
    return list(cfg.names)


def task_pairs(tasks: TasksConfig) -> dict[str, tuple[str, str]] | None:
    """Each built-in compositional task's (selector, transform); None for a family without parts."""
    if tasks.source == "builtin" and tasks.family == "compositional":
        return compositional_pairs(tasks.selectors, tasks.transforms)
    return None


WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
CUES = {
    "first": "first", "second": "second", "third": "third", "last": "last", "largest": "largest",
    "smallest": "smallest", "after_first": "after first", "before_last": "before last",
}
SELECTOR_CUES = {
    "first": "first", "second": "second", "third": "third", "fourth": "fourth", "penultimate": "penultimate",
    "last": "last", "largest": "largest", "smallest": "smallest", "second_largest": "second largest",
    "second_smallest": "second smallest", "median": "median",
}
TRANSFORM_CUES = {
    "same": "same", "plus_one": "plus one", "plus_two": "plus two", "plus_three": "plus three",
    "plus_four": "plus four", "plus_five": "plus five", "minus_one": "minus one", "minus_two": "minus two",
    "minus_three": "minus three", "minus_four": "minus four", "mirror": "mirror",
}
_SHIFTS = {"same": 0, "plus_one": 1, "plus_two": 2, "plus_three": 3, "plus_four": 4, "plus_five": 5, "minus_one": -1,
           "minus_two": -2, "minus_three": -3, "minus_four": -4}
# Words of the task world's text beyond cues and number words: the tiny tokenizer's vocabulary.
FORMAT_WORDS = ("task:", "items:", "answer:")


@dataclass(frozen=True)
class Record:
    prompt: str  # what the adapted model reads
    response: str
    instruction: str = ""  # what only the generator reads, before the prompt (empty: nothing more)

    @property
    def condition(self) -> str:
        """The text the generator reads for this record: the instruction, then the prompt."""
        return f"{self.instruction} {self.prompt}" if self.instruction else self.prompt


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


def _balanced_records(task: str, options: list[int], draw_prompt: Callable[[int, random.Random], str], n: int,
                      rng: random.Random, exclude: set[str]) -> list[Record]:
    """n distinct records whose answers cycle over `options` (balanced), drawn by draw_prompt(answer, rng)."""
    records: list[Record] = []
    seen = set(exclude)
    attempts = 0
    while len(records) < n:
        attempts += 1
        if attempts > 100 * n:
            raise LlgbmError(f"task '{task}': cannot draw {n} distinct records; lower tasks.*_per_task")
        answer = options[len(records) % len(options)]
        prompt = draw_prompt(answer, rng)
        if prompt in seen:
            continue
        seen.add(prompt)
        records.append(Record(prompt, WORDS[answer]))
    rng.shuffle(records)
    return records


def _eight_task(name: str, cfg: TasksConfig, rng: random.Random) -> Task:
    options = task_options(name, cfg.sequence_length)
    draw = lambda answer, r: format_prompt(CUES[name], _items_for(name, answer, cfg.sequence_length, r))
    train = _balanced_records(name, options, draw, cfg.train_per_task, rng, set())
    test = _balanced_records(name, options, draw, cfg.test_per_task, rng, {r.prompt for r in train})
    return Task(name, tuple(WORDS[d] for d in options), tuple(train), tuple(test))


# --- The compositional family: transform(selector(items)) mod 10. ---

def apply_transform(transform: str, value: int) -> int:
    return 9 - value if transform == "mirror" else (value + _SHIFTS[transform]) % 10


def invert_transform(transform: str, value: int) -> int:
    """The item a transform maps to `value` (every transform is a bijection of the digits)."""
    return 9 - value if transform == "mirror" else (value - _SHIFTS[transform]) % 10


def _rank(selector: str, length: int) -> int | None:
    """The order-statistic selectors' rank among `length` distinct digits (0 = smallest); None for positions."""
    ranks = {"smallest": 0, "second_smallest": 1, "median": (length - 1) // 2, "second_largest": length - 2,
             "largest": length - 1}
    return ranks.get(selector)


def selector_options(selector: str, length: int) -> list[int]:
    """The values a selector can pick from `length` distinct digits: rank k needs k digits below it and
    length - 1 - k above it; a position can hold any digit."""
    rank = _rank(selector, length)
    return list(range(10)) if rank is None else list(range(rank, 10 - (length - 1 - rank)))


def _position(selector: str, length: int) -> int:
    return {"first": 0, "second": 1, "third": 2, "fourth": 3, "penultimate": length - 2, "last": length - 1}[selector]


def selector_items(selector: str, value: int, length: int, rng: random.Random) -> list[int]:
    """`length` distinct digits from which `selector` picks `value`."""
    rank = _rank(selector, length)
    if rank is None:
        rest = rng.sample([d for d in range(10) if d != value], length - 1)
        position = _position(selector, length)
        return rest[:position] + [value] + rest[position:]
    items = [value] + rng.sample(range(value), rank) + rng.sample(range(value + 1, 10), length - 1 - rank)
    rng.shuffle(items)
    return items


def composed_options(selector: str, transform: str, length: int) -> list[int]:
    return sorted(apply_transform(transform, v) for v in selector_options(selector, length))


def composed_cue(selector: str, transform: str) -> str:
    return f"{SELECTOR_CUES[selector]} {TRANSFORM_CUES[transform]}"


def composed_prompt(selector: str, transform: str, answer: int, length: int, rng: random.Random) -> str:
    """A prompt of the pair (selector, transform) with its cue whose answer is `answer`: items drawn so that
    the selector picks the item the transform maps to it."""
    return format_prompt(composed_cue(selector, transform),
                         selector_items(selector, invert_transform(transform, answer), length, rng))


def _compositional_task(name: str, selector: str, transform: str, cfg: TasksConfig, rng: random.Random) -> Task:
    length = cfg.sequence_length
    options = composed_options(selector, transform, length)
    draw = lambda answer, r: composed_prompt(selector, transform, answer, length, r)
    train = _balanced_records(name, options, draw, cfg.train_per_task, rng, set())
    test = _balanced_records(name, options, draw, cfg.test_per_task, rng, {r.prompt for r in train})
    return Task(name, tuple(WORDS[d] for d in options), tuple(train), tuple(test))


def primitive_texts(cfg: TasksConfig, count: int, seed: int) -> list[tuple[str, str]]:
    """(prompt, answer) texts that show each primitive alone: a selector on a sequence ("task: largest
    items: ... answer:", "seven") or a transform of a single item ("task: plus two items: seven answer:",
    "nine"); never a composition. Primitives take turns; each one's values cycle (balanced)."""
    rng = random.Random(f"{seed}:primitives")
    units = [("selector", s) for s in cfg.selectors] + [("transform", t) for t in cfg.transforms]
    texts = []
    for i in range(count):
        kind, name = units[i % len(units)]
        turn = i // len(units)
        if kind == "selector":
            options = selector_options(name, cfg.sequence_length)
            value = options[turn % len(options)]
            prompt, answer = format_prompt(SELECTOR_CUES[name], selector_items(name, value, cfg.sequence_length, rng)), value
        else:
            value = turn % 10
            prompt, answer = format_prompt(TRANSFORM_CUES[name], [value]), apply_transform(name, value)
        texts.append((prompt, WORDS[answer]))
    rng.shuffle(texts)
    return texts


def primitive_tasks(cfg: TasksConfig, per_selector: int, seed: int) -> list[Task]:
    """The primitives as test-only tasks, to measure what a base knows: each selector alone
    ("selector:<name>", per_selector records) and each transform of a single item ("transform:<name>",
    its ten inputs)."""
    tasks = []
    for selector in cfg.selectors:
        options = selector_options(selector, cfg.sequence_length)
        draw = lambda answer, r, s=selector: format_prompt(SELECTOR_CUES[s], selector_items(s, answer, cfg.sequence_length, r))
        name = f"selector:{selector}"
        test = _balanced_records(name, options, draw, per_selector, random.Random(f"{seed}:{name}"), set())
        tasks.append(Task(name, tuple(WORDS[d] for d in options), (), tuple(test)))
    for transform in cfg.transforms:
        test = tuple(Record(format_prompt(TRANSFORM_CUES[transform], [d]), WORDS[apply_transform(transform, d)])
                     for d in range(10))
        tasks.append(Task(f"transform:{transform}", WORDS, (), test))
    return tasks


def builtin_tasks(cfg: TasksConfig, seed: int) -> list[Task]:
    if cfg.family == "compositional":
        tasks = [_compositional_task(name, s, t, cfg, random.Random(f"{seed}:{name}:{index}"))
                 for index, (name, (s, t)) in enumerate(compositional_pairs(cfg.selectors, cfg.transforms).items())]
    else:
        tasks = [_eight_task(name, cfg, random.Random(f"{seed}:{name}:{index}")) for index, name in enumerate(cfg.names)]
    return [cue_to_generator(t) for t in tasks] if cfg.cue == "generator" else tasks


def cue_to_generator(task: Task) -> Task:
    """The same records with the cue ("task: <cue>") moved from the prompt to the instruction: the adapted
    model reads "items: ... answer:" alone, the generator the whole text (so its condition is unchanged)."""
    def moved(record: Record) -> Record:
        cue, _, rest = record.prompt.partition(" items: ")
        return Record(f"items: {rest}", record.response, cue)
    return Task(task.name, task.options, tuple(map(moved, task.train)), tuple(map(moved, task.test)))


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


def _parse_records(raw: object, path: Path, where: str, labels: list[str] | None = None,
                   instruction: str = "") -> list[Record]:
    """Records {prompt, response, optional instruction} (other fields ignored); `instruction` is the
    default of records that give none. `where` names the list in errors, `labels` each item (default:
    '<where> record <index>')."""
    if not isinstance(raw, list):
        raise LlgbmError(f"{path}: {where} must be a list of records with string 'prompt' and 'response'")
    labels = labels or [f"{where} record {i}".removeprefix("the file ") for i in range(len(raw))]
    records = []
    for label, item in zip(labels, raw):
        if not (isinstance(item, dict) and isinstance(item.get("prompt"), str) and isinstance(item.get("response"), str)):
            raise LlgbmError(f"{path}: {label} needs string fields 'prompt' and 'response'")
        if not item["prompt"].strip():
            raise LlgbmError(f"{path}: {label} has an empty prompt")
        if not isinstance(item.get("instruction", ""), str):
            raise LlgbmError(f"{path}: {label} has a non-string 'instruction'")
        records.append(Record(item["prompt"], item["response"], item.get("instruction") or instruction))
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


TASK_FILE_KEYS = ("name", "options", "instruction", "records", "train", "test")


def load_task_file(path: Path, test_fraction: float, seed: int) -> Task:
    """A user task: JSONL of records, a JSON list of records, or a JSON object with name, records or
    train/test, and optional options (default: the distinct responses) and instruction (for every record
    that gives none). A record's instruction goes to the generator only, never to the adapted model."""
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
            instruction = raw.get("instruction", "")
            if not isinstance(instruction, str):
                raise LlgbmError(f"{path}: 'instruction' must be a string")
            if "train" in raw or "test" in raw:
                if "records" in raw:
                    raise LlgbmError(f"{path}: give either 'records' or 'train'/'test', not both")
                train = _parse_records(raw.get("train", []), path, "'train'", instruction=instruction)
                test = _parse_records(raw.get("test", []), path, "'test'", instruction=instruction)
            else:
                records = _parse_records(raw.get("records", []), path, "'records'", instruction=instruction)
                train, test = _split(records, test_fraction, seed, name)
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


def make_tasks(cfg: TasksConfig, files_dir: Path) -> list[Task]:
    """The built-in family, or the task files `cfg.files` names in files_dir."""
    if cfg.source == "builtin":
        return builtin_tasks(cfg, cfg.seed)
    tasks = [load_task_file(Path(files_dir) / f, cfg.test_fraction, cfg.seed) for f in cfg.files]
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise LlgbmError(f"tasks.files: task names repeat: {names}")
    return tasks


def _task_to_json(task: Task) -> dict:
    as_list: Callable[[tuple[Record, ...]], list] = lambda rs: [
        {"prompt": r.prompt, "response": r.response, **({"instruction": r.instruction} if r.instruction else {})} for r in rs]
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


def _text_words(tasks: list[Task]) -> dict[str, None]:
    """Every whitespace-separated word of the tasks' own text (prompts, responses, options), once each, in the
    order met."""
    words: dict[str, None] = {}
    for task in tasks:
        for record in (*task.train, *task.test):
            words.update(dict.fromkeys(record.prompt.split() + record.response.split()))
        for option in task.options:
            words.update(dict.fromkeys(option.split()))
    return words


def vocabulary(tasks: list[Task]) -> list[str]:
    """Every whitespace-separated word of the tasks' text, after the built-in world's words."""
    return list({**dict.fromkeys(world_vocabulary()), **_text_words(tasks)})


def task_words(tasks: list[Task]) -> list[str]:
    """The words of the tasks' own text (prompts, responses, options), sorted: a record's deletion leaves
    them as they were unless it held a word no other record holds."""
    return sorted(_text_words(tasks))


def copy_texts(words: list[str], count: int, seed: int) -> list[str]:
    """Task-free texts over the tasks' own words that make each word's identity matter: a random prefix
    (0-4 words), a random run (2-6 words, repeats allowed), then the run again ("a b c d b c d"). The
    repeat can be predicted only by copying what followed the current word before; nothing else can.
    Without such texts, a corpus of prompts whose items are random draws makes the items interchangeable
    (and answer words, never seen, alike): their tied embeddings collapse together, and a LoRA, which
    cannot move them, tells them apart or not by the luck of the seed (issue 35). The prefix keeps the
    repeat from starting at a fixed place, so the base learns no "go back to the first word"."""
    rng = random.Random(f"{seed}:copy")
    texts = []
    for _ in range(count):
        prefix, run = rng.choices(words, k=rng.randint(0, 4)), rng.choices(words, k=rng.randint(2, 6))
        texts.append(" ".join(prefix + run + run))
    return texts


def pretraining_texts(cfg: TasksConfig, tasks: list[Task], count: int, primitive_share: float,
                      composition_share: float = 0.0) -> list[tuple[str, str]]:
    """The tiny base's corpus as (context, scored text) pairs: generic world text, scored whole (plus, for
    the compositional family, a share of primitive texts, scored on their answer only: their items are
    random, only the answer shows the primitive; and, as a positive control only, a share of cued
    compositions), or for task files the user's train prompts (never answers) and `count` copy texts over
    the tasks' words, scored whole."""
    if cfg.source != "builtin":
        texts = [("", r.prompt) for task in tasks for r in task.train]
        texts += [("", text) for text in copy_texts(task_words(tasks), count, cfg.seed)]
        random.Random(f"{cfg.seed}:pretraining").shuffle(texts)
        return texts
    primitives, compositions = round(count * primitive_share), round(count * composition_share)
    generic = [("", text) for text in generic_texts(count - primitives - compositions, cfg.sequence_length, cfg.seed)]
    if not primitives and not compositions:
        return generic
    texts = generic + primitive_texts(cfg, primitives, cfg.seed)
    if compositions:  # drawn after the primitives, so a corpus without them is the one it always was
        texts += cued_composition_texts(cfg, compositions, cfg.seed)
    random.Random(f"{cfg.seed}:pretraining").shuffle(texts)
    return texts


def cued_composition_texts(cfg: TasksConfig, count: int, seed: int) -> list[tuple[str, str]]:
    """(prompt, answer) texts of every (selector, transform) pair with its cue in the prompt ("task: largest
    mirror items: ... answer:", an answer word): pairs take turns, each one's answers cycle (balanced)."""
    rng = random.Random(f"{seed}:cued-compositions")
    pairs = list(compositional_pairs(cfg.selectors, cfg.transforms).values())
    texts = []
    for i in range(count):
        selector, transform = pairs[i % len(pairs)]
        options = composed_options(selector, transform, cfg.sequence_length)
        answer = options[(i // len(pairs)) % len(options)]
        texts.append((composed_prompt(selector, transform, answer, cfg.sequence_length, rng), WORDS[answer]))
    return texts
