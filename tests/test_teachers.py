import pytest

from llgbm.errors import LlgbmError
from llgbm.io import sha256_file
from llgbm.lora import ADAPTER_WEIGHTS
from llgbm.teachers import check_bar, snapshot_steps, summarise, train_all_teachers

from .conftest import checkpoint_dirs


def test_snapshots_are_the_last_k_of_the_trajectory() -> None:
    assert snapshot_steps(320, 3, 20) == [280, 300, 320]


def test_every_task_has_its_checkpoints_and_metrics(micro) -> None:
    summary = micro["summary"]
    assert set(summary["tasks"]) == {"first", "last", "largest"}
    dirs = checkpoint_dirs(micro["teachers"])
    assert [d.name for d in dirs] == ["step-00020", "step-00030"] * 3
    for d in dirs:
        assert (d / "adapter_config.json").is_file() and (d / "prompts.json").is_file() and (d / "metrics.json").is_file()


def test_two_runs_give_identical_teachers(micro, tmp_path) -> None:
    again = train_all_teachers(micro["base"], micro["tasks"], micro["cfg"], tmp_path / "teachers")
    assert again == micro["summary"]
    first = [sha256_file(d / ADAPTER_WEIGHTS) for d in checkpoint_dirs(micro["teachers"])]
    second = [sha256_file(d / ADAPTER_WEIGHTS) for d in checkpoint_dirs(tmp_path / "teachers")]
    assert first == second


def test_bar_names_the_weakest_task() -> None:
    summary = summarise({
        "a": {"base_accuracy": 0.1, "chance": 0.1, "teacher_accuracy_min": 0.95, "teacher_accuracy_final": 1.0},
        "b": {"base_accuracy": 0.3, "chance": 0.1, "teacher_accuracy_min": 0.85, "teacher_accuracy_final": 0.9},
    })
    assert summary["teacher_accuracy_min"] == 0.85
    assert summary["base_accuracy_max_distance_from_chance"] == pytest.approx(0.2)
    check_bar(summary, 0.8)
    with pytest.raises(LlgbmError, match="task 'b' has a checkpoint at held-out accuracy 0.850"):
        check_bar(summary, 0.9)
