"""`llgbm summary`: the first numbers to read, each named with the file and key it comes from."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from llgbm.infra.errors import LlgbmError
from llgbm.study.summary import summary


def test_summary_reads_each_metric_from_its_file_and_marks_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "results" / "evaluate").mkdir(parents=True)
    (tmp_path / "results" / "evaluate" / "metrics.json").write_text(json.dumps(
        {"heldout": {"accuracy": {"generated": 0.25, "teacher": 1}, "gain_share": {"generated": None}}}))
    table = summary(tmp_path).splitlines()
    assert table[0] == "| metric | value | from |"
    assert "| held-out: generated adapters | 0.250 | results/evaluate/metrics.json: heldout.accuracy.generated |" in table
    assert "| held-out: each task's own teacher | 1.000 |" in "\n".join(table)
    assert "| held-out: generated gain share (teacher = 1) | — |" in "\n".join(table)  # undefined, not 0
    assert "| train: last step's L_weights | — |" in "\n".join(table)  # the train stage has not run


def test_summary_without_results_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(LlgbmError, match="no stage's metrics.json; run dvc repro first"):
        summary(tmp_path)


def test_summary_names_the_best_one_adapter_reference_beside_the_generated_figure(tmp_path: Path) -> None:
    for stage, metrics in (("evaluate", {"heldout": {"accuracy": {"generated": 0.4, "factor_mean_teacher": 0.2},
                                                     "below_chance": {"generated": 3}}}),
                           ("diagnostics", {"base_heldout_accuracy_mean": 0.19, "multitask_heldout_accuracy_mean": 0.31})):
        (tmp_path / "results" / stage).mkdir(parents=True)
        (tmp_path / "results" / stage / "metrics.json").write_text(json.dumps(metrics))
    table = summary(tmp_path).splitlines()
    generated = table.index("| held-out: generated adapters | 0.400 | results/evaluate/metrics.json: heldout.accuracy.generated |")
    assert table[generated + 1] == "| held-out: best one-adapter reference (multi-task LoRA) | 0.310 | the best of 4 references |"
    assert "| held-out: tasks whose generated adapters are below chance | 3 |" in "\n".join(table)
