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
