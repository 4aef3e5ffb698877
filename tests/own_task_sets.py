"""Small user-like task sets of several shapes (a position, a count, membership, a transform of one item),
generated from a seed: the teachers' tests on own tasks, and the sets of issue 35's measurements.

`task_set(name)` returns {task name: [{"prompt", "response"}, ...]}: each task's answers balanced over its
options, its prompts distinct, as a user's JSONL files would hold them. "colors" is the issue's set (six
colour tasks, 300 records); "animals", "fruits" and "tools" vary the item count (4-6), the vocabulary, the
prompt's format, the number of options (3-6) and of records (150-300)."""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

NUMBERS = ("zero", "one", "two", "three", "four", "five", "six")


@dataclass(frozen=True)
class Shape:
    cue: str
    answer: Callable[[list[str]], str | None]  # None: items this task does not ask about (redrawn)
    distinct: bool = False  # items without repeats


@dataclass(frozen=True)
class TaskSet:
    words: tuple[str, ...]
    length: int
    template: str  # with {cue} and {items}
    records: int
    tasks: dict[str, Shape]


def position(i: int) -> Callable[[list[str]], str]:
    return lambda items: items[i]


def count(word: str, most: int) -> Callable[[list[str]], str | None]:
    return lambda items: NUMBERS[items.count(word)] if items.count(word) <= most else None


def which_of(words: tuple[str, ...]) -> Callable[[list[str]], str | None]:
    """The one of `words` the items hold (None unless exactly one of them is there)."""
    def answer(items: list[str]) -> str | None:
        present = [w for w in words if w in items]
        return present[0] if len(present) == 1 else None
    return answer


def mapped(i: int, table: dict[str, str]) -> Callable[[list[str]], str]:
    return lambda items: table[items[i]]


def yes_no(word: str) -> Callable[[list[str]], str]:
    return lambda items: "yes" if word in items else "no"


COLORS = ("red", "green", "blue", "yellow", "black", "white")
OPPOSITE = {"red": "green", "green": "red", "blue": "yellow", "yellow": "blue", "black": "white", "white": "black"}
ANIMALS = ("cat", "dog", "fish", "bird", "frog", "horse")
FRUITS = ("apple", "pear", "plum", "fig", "lime", "kiwi")
TOOLS = ("saw", "drill", "hammer", "wrench", "file", "clamp")

SETS = {
    # Issue 35's set: four of its six teachers sat at chance.
    "colors": TaskSet(COLORS, 4, "task: {cue} items: {items} answer:", 300, {
        "count_red": Shape("count red", count("red", 2)),
        "first": Shape("first color", position(0)),
        "has_blue": Shape("has blue", yes_no("blue")),
        "last": Shape("last color", position(-1)),
        "opposite_first": Shape("opposite first color", mapped(0, OPPOSITE)),
        "second": Shape("second color", position(1)),
    }),
    "animals": TaskSet(ANIMALS, 5, "task: {cue} animals: {items} answer:", 200, {
        "third": Shape("third animal", position(2)),
        "cats": Shape("how many cats", count("cat", 3)),
        "pet": Shape("which pet", which_of(("cat", "dog", "fish"))),
        "food_of_last": Shape("food of last", mapped(-1, {"cat": "milk", "dog": "bone", "fish": "worm", "bird": "seed",
                                                          "frog": "fly", "horse": "hay"})),
    }),
    "fruits": TaskSet(FRUITS, 4, "q: {cue} | {items} | a:", 150, {
        "second": Shape("second fruit", position(1), distinct=True),
        "apples": Shape("count apples", count("apple", 2)),
        "sour": Shape("which sour one", which_of(("lime", "kiwi", "plum"))),
        "colour_of_first": Shape("colour of first", mapped(0, {"apple": "red", "pear": "green", "plum": "purple",
                                                                "fig": "brown", "lime": "green", "kiwi": "brown"})),
        "last": Shape("last fruit", position(-1), distinct=True),
    }),
    "tools": TaskSet(TOOLS, 6, "bench {cue} : {items} ->", 300, {
        "first": Shape("first tool", position(0)),
        "penultimate": Shape("penultimate tool", position(-2)),
        "saws": Shape("saws count", count("saw", 4)),
        "power": Shape("which power tool", which_of(("drill", "clamp", "file"))),
        "after_second": Shape("after second", mapped(1, dict(zip(TOOLS, TOOLS[1:] + TOOLS[:1])))),
        "last": Shape("last tool", position(-1), distinct=True),
    }),
}


def task_records(spec: TaskSet, shape: Shape, count_: int, rng: random.Random) -> list[dict]:
    """`count_` distinct records whose answers cycle over the task's options (balanced)."""
    options: dict[str, list[list[str]]] = {}
    for _ in range(4000):  # the options a random draw reaches, with a pool of items per option
        items = rng.sample(spec.words, spec.length) if shape.distinct else rng.choices(spec.words, k=spec.length)
        answer = shape.answer(items)
        if answer is not None:
            options.setdefault(answer, [])
    order = sorted(options)
    records, seen, attempts = [], set(), 0
    while len(records) < count_:
        attempts += 1
        assert attempts < 1000 * count_, f"cannot draw {count_} records for '{shape.cue}'"
        target = order[len(records) % len(order)]
        items = rng.sample(spec.words, spec.length) if shape.distinct else rng.choices(spec.words, k=spec.length)
        prompt = spec.template.format(cue=shape.cue, items=" ".join(items))
        if shape.answer(items) != target or prompt in seen:
            continue
        seen.add(prompt)
        records.append({"prompt": prompt, "response": target})
    rng.shuffle(records)
    return records


def task_set(name: str, seed: int = 0, records: int | None = None) -> dict[str, list[dict]]:
    """{task: records} of the set `name` (see SETS), `records` per task (default: the set's own)."""
    spec = SETS[name]
    return {task: task_records(spec, shape, records or spec.records, random.Random(f"{seed}:{name}:{task}"))
            for task, shape in spec.tasks.items()}


def write_task_set(name: str, directory: Path, seed: int = 0, records: int | None = None) -> list[str]:
    """Write the set as one JSONL file per task in `directory`; returns the file names (tasks.files)."""
    import json

    directory.mkdir(parents=True, exist_ok=True)
    files = []
    for task, rows in task_set(name, seed, records).items():
        (directory / f"{task}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        files.append(f"{task}.jsonl")
    return files
