"""What every stage script shares: the params file, and one-line errors with a non-zero exit."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

from .config import Config, load_config
from .errors import LlgbmError

# Where the stages put their outputs (dvc.yaml declares the same paths).
TASKS_FILE = Path("data/tasks.json")
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


def run_stage(main: Callable[[Config], None], params: str = "params.yaml") -> None:
    """Load and validate params, run the stage, and turn a user-facing error into one line + exit 2."""
    try:
        main(load_config(params))
    except LlgbmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
