"""Devices and precision: where a process computes, and in which dtype autocast runs."""
from __future__ import annotations

import contextlib

import torch
from accelerate import PartialState

# train.mixed_precision: auto (bf16 on a GPU that supports it, else full precision), no, bf16.
MIXED_PRECISION = ("auto", "no", "bf16")


def compute_device() -> torch.device:
    """The device accelerate assigns this process: a GPU where there is one (per rank under
    `accelerate launch`), else the CPU."""
    # Without CUDA, processes started by `accelerate launch` run on CPU over gloo.
    return PartialState(cpu=not torch.cuda.is_available()).device


def resolve_mixed_precision(setting: str) -> str:
    """train.mixed_precision as run here: "auto" is bf16 on a GPU that supports it, else "no"."""
    if setting == "auto":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    return setting


def autocast_dtype(mixed_precision: str) -> torch.dtype | None:
    """The autocast dtype of a resolved mixed-precision setting (None: full precision)."""
    return torch.bfloat16 if mixed_precision == "bf16" else None


def autocast_to(device_type: str, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """torch.autocast to `dtype` on `device_type`, or no autocast where dtype is None (full precision)."""
    return torch.autocast(device_type, dtype=dtype) if dtype else contextlib.nullcontext()


def frozen_base_dtype(base_dtype: str, mixed_precision: str) -> str:
    """The dtype the frozen base's weights are loaded in for deltas and training: bf16 under bf16 mixed
    precision (the base is never trained, so fp32 weights only double its memory traffic; the delta then
    differs from the fp32-weights one by well under 1%, tests/test_delta.py), else base.dtype. The deltas
    stage and training use the same rule, and the delta cache is keyed by its result."""
    return "bfloat16" if mixed_precision == "bf16" else base_dtype
