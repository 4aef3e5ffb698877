"""The split of tasks into training and held-out ones."""
import pytest

from llgbm.data.split import resolve_split
from llgbm.data.tasks import Record, Task
from llgbm.infra.errors import LlgbmError


def _task(name: str) -> Task:
    return Task(name, ("0", "1"), (Record("p", "0"),), (Record("q", "0"),))


def test_heldout_tasks_must_be_tasks_and_leave_one_to_train_on() -> None:
    tasks = [_task("first"), _task("last"), _task("largest")]
    split = resolve_split(tasks, ["largest"], None, None, 0)
    assert (split.training, split.heldout) == (("first", "last"), ("largest",))
    with pytest.raises(LlgbmError, match=r"heldout_tasks: \['median'\] are not tasks of the tasks file"):
        resolve_split(tasks, ["median"], None, None, 0)
    with pytest.raises(LlgbmError, match="every task is held out"):
        resolve_split(tasks, ["first", "last", "largest"], None, None, 0)


def _family() -> tuple[list[str], dict[str, tuple[str, str]]]:
    from llgbm.data.tasks import compositional_pairs

    # The embedded default's family: 5 selectors x 10 transforms.
    pairs = compositional_pairs(["smallest", "second_smallest", "median", "second_largest", "largest"],
                                [f"plus_{n}" for n in ("one", "two", "three", "four", "five")]
                                + [f"minus_{n}" for n in ("one", "two", "three", "four")] + ["mirror"])
    return list(pairs), pairs


def test_validation_tasks_keep_support_and_spread_over_the_factors() -> None:
    from llgbm.data.split import fold_heldout, unsupported_heldout, validation_names

    names, pairs = _family()
    heldout = fold_heldout(names, pairs, 5, 0, 0)
    pool = [n for n in names if n not in heldout]
    chosen = validation_names(pool, heldout, 10, pairs, 0)
    assert len(chosen) == 10 and not set(chosen) & set(heldout) and chosen == [n for n in pool if n in chosen]
    assert not unsupported_heldout(pairs, heldout + chosen)  # every part of both still in training
    assert sorted(pairs[n][1] for n in chosen) == sorted({t for _, t in pairs.values()})  # each transform once
    assert all(sum(pairs[n][0] == s for n in chosen) == 2 for s in {s for s, _ in pairs.values()})
    assert validation_names(pool, heldout, 10, pairs, 0) == chosen  # seeded
    assert validation_names(pool, heldout, 10, pairs, 1) != chosen
    assert validation_names(pool, heldout, 0, pairs, 0) == []


def test_validation_tasks_that_cannot_keep_support_are_refused() -> None:
    from llgbm.data.split import validation_names

    names, pairs = _family()
    with pytest.raises(LlgbmError, match="validation_tasks: 45 validation tasks cannot keep"):
        validation_names(names, [], 45, pairs, 0)
    with pytest.raises(LlgbmError, match="validation_tasks: 50 asked for, but only 50 tasks"):
        validation_names(names, [], 50, pairs, 0)


def test_validation_tasks_are_out_of_training_and_shared_by_every_training_count() -> None:
    from llgbm.data.split import fold_heldout, resolve_names

    names, pairs = _family()
    heldout = fold_heldout(names, pairs, 5, 0, 0)
    full = resolve_names(names, heldout, None, pairs, 0, 5)
    assert len(full.validation) == 5 and len(full.training) == 35
    assert not set(full.validation) & (set(full.training) | set(full.heldout))
    for count in (12, 24):
        subset = resolve_names(names, heldout, count, pairs, 0, 5)
        assert subset.validation == full.validation and set(subset.training) <= set(full.training)
    assert resolve_names(names, heldout, None, pairs, 0).validation == ()


def test_a_split_without_validation_tasks_is_saved_as_before(tmp_path) -> None:
    import json

    from llgbm.data.split import Split

    Split(("a",), ("b",)).save(tmp_path / "plain.json")
    assert json.loads((tmp_path / "plain.json").read_text()) == {"training": ["a"], "heldout": ["b"]}
    Split(("a",), ("b",), ("c",)).save(tmp_path / "with.json")
    assert Split.load(tmp_path / "with.json") == Split(("a",), ("b",), ("c",))
    assert Split.load(tmp_path / "plain.json").validation == ()
