import pytest

from llgbm.diagnostics import headroom, headroom_summary, mean_above_chance, split_tasks
from llgbm.errors import LlgbmError
from llgbm.tasks import Record, Task

from .conftest import micro_config


def _task(name: str, options: int) -> Task:
    return Task(name, tuple(str(i) for i in range(options)), (Record("p", "0"),), (Record("q", "0"),))


def test_mean_above_chance_is_exact() -> None:
    tasks = [_task("a", 10), _task("b", 4)]
    assert mean_above_chance({"a": 0.3, "b": 0.25}, tasks) == pytest.approx((0.2 + 0.0) / 2)


def test_split_needs_known_heldout_tasks() -> None:
    tasks = [_task("first", 10), _task("last", 10), _task("largest", 6)]
    training, heldout = split_tasks(micro_config(), tasks)
    assert [t.name for t in training] == ["first", "last"] and [t.name for t in heldout] == ["largest"]
    with pytest.raises(LlgbmError, match="heldout_tasks"):
        split_tasks(micro_config(), tasks[:2])


def test_headroom_trains_the_multitask_reference_and_measures_it_through_peft(micro, tmp_path) -> None:
    from peft import PeftModel

    from llgbm.models import load_base

    cfg = micro["cfg"]
    result = headroom(cfg, micro["tasks"], micro["base"], tmp_path)
    assert set(result["multitask"]["heldout"]) == {"largest"} and set(result["multitask"]["seen"]) == {"first", "last"}
    assert result["multitask"]["loss_final"] < result["multitask"]["loss_first"]
    assert "primitives" not in result["base"]  # the eight family has none
    PeftModel.from_pretrained(load_base(micro["base"]), str(tmp_path / "multitask"))
    summary = headroom_summary(result, micro["tasks"], cfg)
    chance = result["chance"]["largest"]
    assert summary["multitask_heldout_above_chance"] == pytest.approx(result["multitask"]["heldout"]["largest"] - chance)
    assert summary["base_heldout_max_distance_from_chance"] == pytest.approx(abs(result["base"]["heldout"]["largest"] - chance))
