import json
from collections import Counter

import pytest

from llgbm.data.tasks import CUES, TasksConfig, builtin_tasks, load_task_file, load_tasks, make_tasks, save_tasks
from llgbm.infra.errors import LlgbmError


def apply_selector(selector: str, items: list[int]) -> int:
    """The test's oracle, written from the selectors' names, independent of the generator's ranks and
    positions: the median of an even count is the lower middle one."""
    order = sorted(items)
    return {"first": items[0], "second": items[1], "third": items[2], "fourth": items[3], "penultimate": items[-2],
            "last": items[-1], "smallest": order[0], "second_smallest": order[1], "median": order[(len(order) - 1) // 2],
            "second_largest": order[-2], "largest": order[-1]}[selector]


def test_builtin_family_is_deterministic_and_balanced() -> None:
    cfg = TasksConfig()
    first, second = builtin_tasks(cfg, 0), builtin_tasks(cfg, 0)
    assert first == second
    assert builtin_tasks(cfg, 1) != first
    assert len(first) >= 8
    for task in first:
        counts = Counter(r.response for r in task.test)
        assert set(counts) == set(task.options)
        assert max(counts.values()) - min(counts.values()) <= 1  # a constant predictor scores chance
        assert not {r.prompt for r in task.train} & {r.prompt for r in task.test}


def test_prompt_alone_reveals_the_task() -> None:
    tasks = builtin_tasks(TasksConfig(), 0)
    cue_of = {t.name: {r.prompt.split(" items:")[0] for r in (*t.train, *t.test)} for t in tasks}
    for task in tasks:
        assert cue_of[task.name] == {f"task: {CUES[task.name]}"}


@pytest.mark.parametrize("name, check", [
    ("first", lambda items, a: items[0] == a),
    ("second", lambda items, a: items[1] == a),
    ("third", lambda items, a: items[2] == a),
    ("last", lambda items, a: items[-1] == a),
    ("largest", lambda items, a: max(items) == a),
    ("smallest", lambda items, a: min(items) == a),
    ("after_first", lambda items, a: (items[0] + 1) % 10 == a),
    ("before_last", lambda items, a: (items[-1] - 1) % 10 == a),
])
def test_responses_follow_the_rule(name, check) -> None:
    from llgbm.data.tasks import WORDS

    (task,) = builtin_tasks(TasksConfig(names=[name]), 3)
    for record in (*task.train, *task.test):
        items = [WORDS.index(w) for w in record.prompt.split("items: ")[1].split(" answer:")[0].split()]
        assert check(items, WORDS.index(record.response)), record


def test_tasks_file_round_trip(tmp_path) -> None:
    tasks = builtin_tasks(TasksConfig(names=["first", "largest"], train_per_task=8, test_per_task=6), 0)
    save_tasks(tasks, tmp_path / "tasks.json")
    assert load_tasks(tmp_path / "tasks.json") == tasks


def test_user_task_files(tmp_path) -> None:
    records = [{"prompt": f"sentiment of review {i}", "response": "good" if i % 2 else "bad"} for i in range(20)]
    (tmp_path / "reviews.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    (tmp_path / "qa.json").write_text(json.dumps({"name": "qa", "options": ["yes", "no"],
                                                  "train": [{"prompt": "a?", "response": "yes"}],
                                                  "test": [{"prompt": "b?", "response": "no"}]}))
    tasks = make_tasks(TasksConfig(source="files", files=["reviews.jsonl", "qa.json"]), tmp_path)
    reviews, qa = tasks
    assert reviews.name == "reviews" and len(reviews.train) == 16 and len(reviews.test) == 4
    assert reviews.options == ("bad", "good")
    assert qa.options == ("yes", "no")


@pytest.mark.parametrize("content, fragment", [
    ("[]", "task has no prompts"),
    ('{"records": []}', "task has no prompts"),
    ('[{"prompt": "", "response": "x"}, {"prompt": "y", "response": "x"}]', "record 0 has an empty prompt"),
    ('[{"text": "x"}]', "record 0 needs string fields"),
    ("{not json", "not valid JSON"),
])
def test_bad_task_files(tmp_path, content: str, fragment: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(LlgbmError, match=fragment) as info:
        load_task_file(path, 0.2, 0)
    assert str(path) in str(info.value)


def test_missing_task_file(tmp_path) -> None:
    with pytest.raises(LlgbmError, match="task file not found"):
        load_task_file(tmp_path / "absent.jsonl", 0.2, 0)


# --- The compositional family. ---

COMPOSITIONAL = TasksConfig(family="compositional", train_per_task=64, test_per_task=30)


def _items(prompt: str) -> list[int]:
    from llgbm.data.tasks import WORDS

    return [WORDS.index(w) for w in prompt.split("items: ")[1].split(" answer:")[0].split()]


def test_compositional_family_is_deterministic_balanced_and_follows_its_rule() -> None:
    from llgbm.data.tasks import WORDS, apply_transform

    tasks = builtin_tasks(COMPOSITIONAL, 0)
    assert tasks == builtin_tasks(COMPOSITIONAL, 0) and tasks != builtin_tasks(COMPOSITIONAL, 1)
    assert len(tasks) == 50 and len({t.name for t in tasks}) == 50
    for task in tasks:
        selector, transform = next((s, t) for s in COMPOSITIONAL.selectors for t in COMPOSITIONAL.transforms
                                   if task.name == f"{s}_{t}")
        for split in (task.train, task.test):
            counts = Counter(r.response for r in split)
            assert set(counts) == set(task.options)
            assert max(counts.values()) - min(counts.values()) <= 1  # a constant predictor scores chance
        assert not {r.prompt for r in task.train} & {r.prompt for r in task.test}
        for record in (*task.train, *task.test):
            items = _items(record.prompt)
            assert len(set(items)) == len(items) == COMPOSITIONAL.sequence_length
            assert WORDS[apply_transform(transform, apply_selector(selector, items))] == record.response, record


def test_compositional_cue_names_both_parts_and_options_set_chance() -> None:
    tasks = {t.name: t for t in builtin_tasks(COMPOSITIONAL, 0)}
    assert {r.prompt.split(" items:")[0] for r in tasks["largest_plus_two"].train} == {"task: largest plus two"}
    # largest of 5 distinct digits is 4..9, plus two (mod 10) gives 6, 7, 8, 9, 0, 1.
    assert tasks["largest_plus_two"].options == ("zero", "one", "six", "seven", "eight", "nine")
    assert tasks["largest_plus_two"].chance == pytest.approx(1 / 6)
    assert tasks["smallest_mirror"].options == ("four", "five", "six", "seven", "eight", "nine")
    assert tasks["median_minus_one"].options == ("one", "two", "three", "four", "five", "six")


def test_transforms_are_bijections_with_their_inverse() -> None:
    from llgbm.data.tasks import TRANSFORMS, apply_transform, invert_transform

    for transform in TRANSFORMS:
        assert sorted(apply_transform(transform, d) for d in range(10)) == list(range(10))
        assert all(invert_transform(transform, apply_transform(transform, d)) == d for d in range(10))
    assert [apply_transform("mirror", d) for d in (0, 3, 9)] == [9, 6, 0]
    assert [apply_transform("minus_two", d) for d in (0, 1, 5)] == [8, 9, 3]


def test_primitive_texts_never_compose() -> None:
    from llgbm.data.tasks import SELECTOR_CUES, TRANSFORM_CUES, WORDS, apply_transform, primitive_texts

    texts = primitive_texts(COMPOSITIONAL, 300, 0)
    assert texts == primitive_texts(COMPOSITIONAL, 300, 0)
    by_cue = {SELECTOR_CUES[s]: ("selector", s) for s in COMPOSITIONAL.selectors}
    by_cue.update({TRANSFORM_CUES[t]: ("transform", t) for t in COMPOSITIONAL.transforms})
    kinds = Counter()
    for prompt, answer in texts:
        cue = prompt.split("task: ")[1].split(" items:")[0]
        kind, name = by_cue[cue]  # a KeyError would be a composed or unknown cue
        kinds[kind] += 1
        items = _items(prompt)
        if kind == "selector":
            assert len(items) == COMPOSITIONAL.sequence_length and apply_selector(name, items) == WORDS.index(answer)
        else:
            assert len(items) == 1 and apply_transform(name, items[0]) == WORDS.index(answer)
    assert kinds == {"selector": 100, "transform": 200}  # 5 selectors and 10 transforms take turns


def test_pretraining_mix_follows_the_share() -> None:
    from llgbm.data.tasks import pretraining_texts

    texts = pretraining_texts(COMPOSITIONAL, [], 200, 0.25)
    assert len(texts) == 200
    assert sum(prompt.startswith("task:") for prompt, _ in texts) == 50  # primitives: scored on the answer
    assert sum(prompt == "" for prompt, _ in texts) == 150  # generic text: scored whole
    assert all(prompt == "" for prompt, _ in pretraining_texts(COMPOSITIONAL, [], 50, 0.0))


def test_cued_compositions_answer_their_pair_and_join_the_corpus_only_when_asked() -> None:
    from llgbm.data.tasks import (
        SELECTOR_CUES,
        TRANSFORM_CUES,
        WORDS,
        apply_transform,
        compositional_pairs,
        cued_composition_texts,
        pretraining_texts,
    )

    texts = cued_composition_texts(COMPOSITIONAL, 200, 0)
    pairs = {f"{SELECTOR_CUES[s]} {TRANSFORM_CUES[t]}": (s, t)
             for s, t in compositional_pairs(COMPOSITIONAL.selectors, COMPOSITIONAL.transforms).values()}
    seen = Counter()
    for prompt, answer in texts:
        selector, transform = pairs[prompt.split("task: ")[1].split(" items:")[0]]
        seen[selector, transform] += 1
        assert apply_transform(transform, apply_selector(selector, _items(prompt))) == WORDS.index(answer)
    assert set(seen.values()) == {200 // len(pairs)}  # every pair, held-out ones included, in turn
    mixed = pretraining_texts(COMPOSITIONAL, [], 200, 0.25, 0.5)
    assert len(mixed) == 200 and sum(prompt == "" for prompt, _ in mixed) == 50


def test_primitive_tasks_measure_each_part_alone() -> None:
    from llgbm.data.tasks import primitive_tasks

    tasks = {t.name: t for t in primitive_tasks(COMPOSITIONAL, 20, 0)}
    assert len(tasks) == 15
    assert tasks["selector:largest"].options == ("four", "five", "six", "seven", "eight", "nine")
    assert Counter(r.response for r in tasks["selector:median"].test) == Counter(
        {w: 3 for w in ("two", "three", "four", "five", "six", "seven")} | {"two": 4, "three": 4})
    assert [r.prompt for r in tasks["transform:mirror"].test][:1] == ["task: mirror items: zero answer:"]
    assert [r.response for r in tasks["transform:mirror"].test][:2] == ["nine", "eight"]


def test_every_selector_picks_the_value_it_was_drawn_for() -> None:
    import random

    from llgbm.data.tasks import SELECTORS, selector_items, selector_options

    for length in (4, 5, 7):
        for selector in SELECTORS:
            options = selector_options(selector, length)
            for value in options:
                items = selector_items(selector, value, length, random.Random(value))
                assert len(set(items)) == length and apply_selector(selector, items) == value
    assert selector_options("median", 5) == [2, 3, 4, 5, 6, 7]  # two digits below, two above
    assert selector_options("second_largest", 4) == [2, 3, 4, 5, 6, 7, 8]


# --- the cue-free testbed (tasks.cue: generator) -----------------------------------------------------

def _compositional(cue: str) -> list:
    return builtin_tasks(TasksConfig(family="compositional", selectors=["smallest", "largest"],
                                     transforms=["plus_one", "mirror"], train_per_task=12, test_per_task=6, cue=cue), 0)


def test_cue_free_tasks_give_the_cue_to_the_generator_only() -> None:
    from llgbm.data.probes import answer_prompts

    cued, free = _compositional("prompt"), _compositional("generator")
    for a, b in zip(cued, free):
        pairs = list(zip((*a.train, *a.test), (*b.train, *b.test)))
        # The generator reads exactly what it reads on the cued testbed; the adapted model the items alone.
        assert all(x.condition == y.condition == x.prompt and x.response == y.response for x, y in pairs)
        assert all(y.prompt.startswith("items: ") and "task:" not in y.prompt and y.instruction.startswith("task: ")
                   for _, y in pairs)
    # The texts the adapted model is trained and scored on (teachers, SFT, evaluation: record prompts; the
    # KL reference: answer prompts) hold no cue; probes are drawn from the same record prompts.
    prompts = answer_prompts(free, 4, 0, 0).prompts
    assert all("task:" not in p for texts in prompts.values() for p in texts)
    # Items alone cannot name the task: every prompt is format words and number words, nothing else.
    from llgbm.data.tasks import WORDS
    assert {w for t in free for r in (*t.train, *t.test) for w in r.prompt.split()} <= {"items:", "answer:", *WORDS}


def test_instructions_of_task_files_and_their_round_trip(tmp_path) -> None:
    path = tmp_path / "shout.json"
    path.write_text(json.dumps({"instruction": "answer loudly", "records": [
        {"prompt": "a b", "response": "x"}, {"prompt": "c d", "response": "y", "instruction": "answer softly"},
        {"prompt": "e f", "response": "x"}]}))
    task = load_task_file(path, 0.34, 0)
    records = {r.prompt: r for r in (*task.train, *task.test)}
    assert records["a b"].condition == "answer loudly a b" and records["c d"].instruction == "answer softly"
    save_tasks([task], tmp_path / "tasks.json")
    assert load_tasks(tmp_path / "tasks.json") == [task]
    path.write_text(json.dumps({"instruction": 3, "records": []}))
    with pytest.raises(LlgbmError, match="shout.json: 'instruction' must be a string"):
        load_task_file(path, 0.2, 0)
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a", "response": "b", "instruction": ["x"]}\n')
    with pytest.raises(LlgbmError, match="bad.jsonl: line 1 has a non-string 'instruction'"):
        load_task_file(tmp_path / "bad.jsonl", 0.2, 0)


def test_the_builtin_corpus_is_unchanged_by_the_copy_texts_of_task_files() -> None:
    """The default testbed's base is pre-trained on exactly the texts it was (issue 35 changed task files only)."""
    import hashlib

    import yaml

    from llgbm.config import config_from_dict
    from llgbm.data.tasks import pretraining_texts

    from .test_pipeline import REPO

    cfg = config_from_dict(yaml.safe_load((REPO / "params.yaml").read_text()))
    texts = pretraining_texts(cfg.tasks, [], cfg.base.pretrain_texts, cfg.base.pretrain_primitive_share)
    assert hashlib.sha256(json.dumps(texts).encode()).hexdigest() == (
        "e3bb32f106bae7dad2fc3967c12c7e03db14a3784b0588f8f974c94ce5979154")


def test_task_files_pretrain_on_their_prompts_and_copy_texts_of_their_words_never_an_answer(tmp_path) -> None:
    from llgbm.data.tasks import copy_texts, pretraining_texts, task_words

    from .own_task_sets import write_task_set

    cfg = TasksConfig(source="files", files=write_task_set("fruits", tmp_path, records=40))
    tasks = make_tasks(cfg, tmp_path)
    texts = pretraining_texts(cfg, tasks, 100, 0.0)
    prompts = [r.prompt for t in tasks for r in t.train]
    assert all(context == "" for context, _ in texts) and len(texts) == len(prompts) + 100
    assert Counter(text for _, text in texts) == Counter(prompts + copy_texts(task_words(tasks), 100, cfg.seed))
    words = task_words(tasks)
    assert {"lime", "q:", "|", "a:", "purple"} <= set(words)  # answer words too: only as words of a copy
    for text in copy_texts(words, 200, 0):
        tokens = text.split()
        assert any(tokens[-n:] == tokens[-2 * n : -n] for n in range(2, 7))  # ends with a run, repeated
        assert set(tokens) <= set(words) and 4 <= len(tokens) <= 4 + 2 * 6
    answered = {f"{r.prompt} {r.response}" for t in tasks for r in (*t.train, *t.test)}
    assert not any(prompt in text for _, text in texts for prompt in answered)
    assert copy_texts(words, 50, 0) == copy_texts(words, 50, 0) != copy_texts(words, 50, 1)


def test_own_task_sets_vary_in_shape_and_are_balanced() -> None:
    from .own_task_sets import SETS, task_set

    for name, spec in SETS.items():
        tasks = task_set(name)
        assert 150 <= spec.records <= 300 and set(tasks) == set(spec.tasks)
        for task, records in tasks.items():
            counts = Counter(r["response"] for r in records)
            assert 2 <= len(counts) <= 6 and max(counts.values()) - min(counts.values()) <= 1, (name, task)
            assert len({r["prompt"] for r in records}) == len(records) == spec.records
