"""Library noise that is not ours to print."""
from __future__ import annotations

import warnings

from transformers.utils import logging


def quiet_transformers() -> None:
    logging.disable_progress_bar()
    logging.set_verbosity_error()
    # PEFT calls a transformers property that transformers 5 deprecates; nothing a user of llgbm can act on.
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
