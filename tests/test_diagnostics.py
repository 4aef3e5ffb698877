import re
import subprocess
import sys

import pytest

from llgbm.data.split import Split
from llgbm.data.tasks import Record, Task
from llgbm.infra.errors import LlgbmError
from llgbm.recipes.diagnostics import headroom, headroom_summary, mean_above_chance, split_tasks

from .conftest import micro_config, micro_split


def _task(name: str, options: int) -> Task:
    return Task(name, tuple(str(i) for i in range(options)), (Record("p", "0"),), (Record("q", "0"),))


def test_mean_above_chance_is_exact() -> None:
    tasks = [_task("a", 10), _task("b", 4)]
    assert mean_above_chance({"a": 0.3, "b": 0.25}, tasks) == pytest.approx((0.2 + 0.0) / 2)


def test_split_tasks_are_the_generators_and_need_a_heldout_task() -> None:
    tasks = [_task("first", 10), _task("last", 10), _task("largest", 6)]
    training, heldout = split_tasks(micro_split(micro_config(), tasks), tasks)
    assert [t.name for t in training] == ["first", "last"] and [t.name for t in heldout] == ["largest"]
    training, _ = split_tasks(Split(("last",), ("largest",)), tasks)  # max_training_tasks: 'first' is neither
    assert [t.name for t in training] == ["last"]
    with pytest.raises(LlgbmError, match="diagnostics need at least one held-out task"):
        split_tasks(Split(("first", "last", "largest"), ()), tasks)


def test_headroom_trains_the_multitask_reference_and_measures_it_through_peft(micro, tmp_path) -> None:
    from peft import PeftModel

    from llgbm.artifacts.base_model import load_base

    cfg = micro["cfg"]
    result = headroom(cfg, micro["tasks"], Split.load(micro["split"]), micro["base"], tmp_path)
    assert set(result["multitask"]["heldout"]) == {"largest"} and set(result["multitask"]["seen"]) == {"first", "last"}
    assert result["multitask"]["loss_final"] < result["multitask"]["loss_first"]
    assert "primitives" not in result["base"]  # the eight family has none
    PeftModel.from_pretrained(load_base(micro["base"]), str(tmp_path / "multitask"))
    summary = headroom_summary(result, micro["tasks"], Split.load(micro["split"]))
    chance = result["chance"]["largest"]
    assert summary["multitask_heldout_above_chance"] == pytest.approx(result["multitask"]["heldout"]["largest"] - chance)
    assert summary["base_heldout_max_distance_from_chance"] == pytest.approx(abs(result["base"]["heldout"]["largest"] - chance))


def test_ridge_readout_names_the_part_shared_with_training_tasks() -> None:
    import torch

    from llgbm.recipes.diagnostics import leave_one_task_out, readout_scores

    # Embedding = selector direction + transform direction: a held-out pair is a sum of seen parts.
    s = {"a": torch.tensor([1.0, 0, 0, 0]), "b": torch.tensor([0, 1.0, 0, 0])}
    t = {"x": torch.tensor([0, 0, 1.0, 0]), "y": torch.tensor([0, 0, 0, 1.0])}
    embed = {f"{i}_{j}": (s[i] + t[j]).repeat(3, 1) for i in s for j in t}
    selector = {name: name.split("_")[0] for name in embed}
    fit = {n: e for n, e in embed.items() if n != "b_y"}
    assert readout_scores(fit, {"b_y": embed["b_y"]}, selector, 1e-3) == {"b_y": 1.0}
    only_a = {n: e for n, e in embed.items() if n.startswith("a")}
    assert readout_scores(only_a, {"b_y": embed["b_y"]}, selector, 1e-3) == {"b_y": 0.0}  # 'b' unseen: unpredictable
    assert leave_one_task_out(embed, selector, 1e-3) == {name: 1.0 for name in embed}


def test_structure_of_the_micro_teachers(micro_train_inputs) -> None:
    from llgbm.recipes.diagnostics import structure, structure_summary

    m = micro_train_inputs
    result = structure(m["cfg"], m["tasks"], Split.load(m["split"]), m["base"], m["teachers"], m["embeddings"])
    assert set(result["weight_space"]) == {"largest"} and "recover_selector" not in result  # eight family
    summary = structure_summary(result)
    assert 0.0 <= summary["weight_r2_heldout_mean"] <= 1.0
    assert -1.0 <= summary["weight_nearest_cosine_heldout_mean"] <= 1.0


def test_task_arithmetic_uses_seen_pairs_only() -> None:
    from llgbm.data.tasks import compositional_pairs
    from llgbm.recipes.diagnostics import arithmetic_pairs

    pairs = compositional_pairs(["first", "last", "largest"], ["plus_one", "mirror"])
    training = [n for n in pairs if n not in ("first_mirror", "last_plus_one")]
    assert arithmetic_pairs(pairs, training, "first_mirror") == ("first_plus_one", "largest_mirror", "largest_plus_one")
    assert arithmetic_pairs(pairs, ["first_plus_one", "last_mirror"], "first_mirror") is None


def test_teacher_baselines_are_measured_through_peft(micro_train_inputs, tmp_path) -> None:
    from llgbm.recipes.diagnostics import baselines_summary, teacher_baselines

    m = micro_train_inputs
    result = teacher_baselines(m["cfg"], m["tasks"], Split.load(m["split"]), m["base"], m["teachers"], m["embeddings"], tmp_path)
    assert set(result) == {"largest"}
    assert set(result["largest"]) == {"update_mean_teacher", "nearest_teacher", "knearest_teachers"}  # no arithmetic: eight family
    assert (tmp_path / "largest" / "knearest_teachers" / "adapter_config.json").is_file()
    summary = baselines_summary(result, m["tasks"])
    chance = next(t.chance for t in m["tasks"] if t.name == "largest")
    assert summary["nearest_teacher_heldout_above_chance"] == pytest.approx(result["largest"]["nearest_teacher"] - chance)


def test_report_has_a_row_per_heldout_task_and_the_summary_means() -> None:
    from llgbm.recipes.diagnostics import markdown_report

    result = {"chance": {"a_x": 0.25, "b_y": 0.5},
              "base": {"heldout": {"a_x": 0.2, "b_y": 0.5}},
              "multitask": {"heldout": {"a_x": 0.9, "b_y": 0.7}, "seen": {"a_y": 0.95, "b_x": 0.85}},
              "baselines": {"a_x": {"update_mean_teacher": 0.3, "task_arithmetic": 0.4}, "b_y": {"update_mean_teacher": 0.5}},
              "structure": {"weight_space": {"a_x": {"r2_mean": 0.1, "nearest_cosine_mean": 0.2},
                                             "b_y": {"r2_mean": 0.3, "nearest_cosine_mean": 0.4}},
                            "recover_selector": {"heldout": {"a_x": 1.0, "b_y": 0.5}}}}
    summary = {"heldout_chance_mean": 0.375, "base_heldout_accuracy_mean": 0.35, "multitask_heldout_accuracy_mean": 0.8,
               "multitask_seen_accuracy_mean": 0.9, "update_mean_teacher_heldout_accuracy_mean": 0.4,
               "task_arithmetic_heldout_accuracy_mean": 0.4, "weight_r2_heldout_mean": 0.2,
               "weight_nearest_cosine_heldout_mean": 0.3, "recover_selector_heldout": 0.75}
    report = markdown_report(summary, result)
    assert "| a_x | 0.250 | 0.200 | 0.900 | 0.300 | 0.400 | 0.100 | 0.200 | 1.000 |" in report
    assert "| b_y | 0.500 | 0.500 | 0.700 | 0.500 | — | 0.300 | 0.400 | 0.500 |" in report  # no arithmetic triple
    assert "| **mean** | 0.375 | 0.350 | 0.800 | 0.400 | 0.400 | 0.200 | 0.300 | 0.750 |" in report
    assert "selector recovered" in report and "transform recovered" not in report and "| update mean teacher |" in report
    assert "on its 2 training tasks: 0.900" in report


def test_diagnostics_table_goes_between_the_readme_markers(tmp_path) -> None:
    from llgbm.study.diagnostics_table import diagnostics_table

    report = tmp_path / "results" / "diagnostics" / "report.md"
    report.parent.mkdir(parents=True)
    report.write_text("# Diagnostics of the testbed\n\n| task | base |\n|---|---|\n| a_x | 0.200 |\n")
    readme = tmp_path / "README.md"
    readme.write_text("# r\n<!-- diagnostics:begin -->\nold\n<!-- diagnostics:end -->\nkept\n")
    assert diagnostics_table(str(readme), str(tmp_path)) == f"wrote the diagnostics table between the markers of {readme}"
    text = readme.read_text()
    assert "old" not in text and "| a_x | 0.200 |" in text and "Diagnostics of the testbed" not in text
    assert text.startswith("# r\n<!-- diagnostics:begin -->\n_Written by `llgbm diagnostics-table") and text.endswith(
        "<!-- diagnostics:end -->\nkept\n")
    readme.write_text("no markers\n")
    with pytest.raises(LlgbmError, match=f"^{re.escape(str(readme))}: needs one '<!-- diagnostics:begin -->'"):
        diagnostics_table(str(readme), str(tmp_path))
    assert readme.read_text() == "no markers\n"


@pytest.mark.e2e  # a subprocess: the command line itself
def test_diagnostics_table_writes_only_a_named_document(tmp_path) -> None:
    # The table is stamped with this machine and commit: no default document is rewritten.
    (tmp_path / "README.md").write_text("<!-- diagnostics:begin -->\n<!-- diagnostics:end -->\n")
    result = subprocess.run([sys.executable, "-m", "llgbm.cli", "diagnostics-table", "--repo", str(tmp_path)],
                            cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 2 and "--readme" in result.stderr
    assert (tmp_path / "README.md").read_text() == "<!-- diagnostics:begin -->\n<!-- diagnostics:end -->\n"
