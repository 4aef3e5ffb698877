"""Where the stages put their outputs (dvc.yaml declares the same paths), relative to the repository."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TASK_FILES_DIR = Path("data/tasks")  # the user's task files (tasks.source files): a dep of the stages that read them
CHECKED_FILE = Path("data/checked.json")  # the check stage's mark: constant, so a passing check reruns nothing
TASKS_FILE = Path("data/tasks.json")
SPLIT_FILE = Path("data/split.json")
BASE_DIR = Path("models/base")
TEACHERS_DIR = Path("models/teachers")
DELTAS_DIR = Path("cache/deltas")
EMBEDDINGS_DIR = Path("cache/embeddings")
GENERATOR_DIR = Path("models/generator")
TRAIN_CHECKPOINTS_DIR = Path("checkpoints/train")
EVALUATION_ADAPTERS_DIR = Path("models/evaluation")
DIAGNOSTICS_DIR = Path("models/diagnostics")
RESULTS_DIR = Path("results")
DIAGNOSTICS_REPORT = RESULTS_DIR / "diagnostics" / "report.md"


@dataclass
class Paths:
    """The inputs and outputs of training and evaluation (tests point them at temporary directories)."""
    split: Path
    base: Path
    teachers: Path
    deltas: Path
    embeddings: Path
    generator: Path  # final generator + config.json
    checkpoints: Path  # resumable training state
    live: Path  # dvclive directory of the train stage

    @classmethod
    def pipeline(cls) -> "Paths":
        return cls(split=SPLIT_FILE, base=BASE_DIR, teachers=TEACHERS_DIR, deltas=DELTAS_DIR,
                   embeddings=EMBEDDINGS_DIR, generator=GENERATOR_DIR, checkpoints=TRAIN_CHECKPOINTS_DIR,
                   live=RESULTS_DIR / "train")
