"""What every stage script shares: the params file, and one-line errors with a non-zero exit."""
from __future__ import annotations

import sys
from typing import Callable

from llgbm.config import Config, load_config
from llgbm.infra.errors import LlgbmError


def run_stage(recipe: Callable[[Config], None], params: str = "params.yaml") -> None:
    """Load and validate params, run the stage's recipe, and turn a user-facing error into one line + exit 2."""
    try:
        recipe(load_config(params))
    except LlgbmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
