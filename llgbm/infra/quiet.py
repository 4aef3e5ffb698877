"""Library noise that is not ours to print."""
from __future__ import annotations

from transformers.utils import logging


def quiet_transformers() -> None:
    logging.disable_progress_bar()
    logging.set_verbosity_error()
