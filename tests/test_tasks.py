import json
from collections import Counter

import pytest

from llgbm.config import TasksConfig
from llgbm.errors import LlgbmError
from llgbm.tasks import CUES, builtin_tasks, load_task_file, load_tasks, make_tasks, save_tasks


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
    from llgbm.tasks import WORDS

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
    tasks = make_tasks(TasksConfig(source="files", files=[str(tmp_path / "reviews.jsonl"), str(tmp_path / "qa.json")]))
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
