"""The one timing helper of every bench: the compared paths interleaved, so that a shared machine's drift,
a cold allocator or a cache warmed by the path before falls on every path alike, not on whichever runs first."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, Mapping

import torch

CLOCK: Callable[[], float] = time.perf_counter  # read at each call of `interleaved` (tests put a fake clock here)


@dataclass(frozen=True)
class Timing:
    seconds: float  # the median of `samples`
    samples: tuple[float, ...]  # each timed call's wall seconds, in the order they ran (warm-ups excluded)
    peak_gib: float | None  # CUDA: the most memory allocated during any call of this path (warm-ups included); else None


def interleaved(paths: Mapping[str, Callable[[], object]], repeats: int, warmup: int = 1,
                device: torch.device | str | None = None, clock: Callable[[], float] | None = None,
                synchronize: Callable[[], None] | None = None) -> dict[str, Timing]:
    """Time each of `paths` (name -> a call doing one unit of its work) side by side.

    Runs `warmup` untimed rounds, then `repeats` timed rounds; a round calls every path once, in the
    mapping's order (A B A B ...). A timed call is `synchronize(); t0 = clock(); path(); synchronize();
    clock() - t0`. Returns per path the median of its `repeats` timed samples, the samples, and on CUDA
    its peak memory: the cache is emptied once before the first round, the peak statistic reset before
    every call, and the path's figure is the largest over its calls. `synchronize` defaults to CUDA's on
    a CUDA device and to nothing elsewhere; `clock` to `CLOCK`. What a path returns is dropped at once."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"interleaved: repeats {repeats} (at least 1) and warmup {warmup} (at least 0)")
    device = torch.device(device) if device is not None else None
    cuda = device is not None and device.type == "cuda"
    clock = clock or CLOCK
    if synchronize is None:
        synchronize = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)
    samples: dict[str, list[float]] = {name: [] for name in paths}
    peaks: dict[str, float] = {name: 0.0 for name in paths}
    if cuda:
        torch.cuda.empty_cache()
    for round_ in range(warmup + repeats):
        for name, path in paths.items():
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            timed = round_ >= warmup
            synchronize()
            start = clock() if timed else 0.0
            path()
            synchronize()
            if timed:
                samples[name].append(clock() - start)
            if cuda:
                peaks[name] = max(peaks[name], torch.cuda.max_memory_allocated(device) / 2**30)
    return {name: Timing(statistics.median(values), tuple(values), peaks[name] if cuda else None)
            for name, values in samples.items()}

