"""PNG pictures of a stage's results, rendered offline (no browser, no CDN): a file a reader can open."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a display
import matplotlib.pyplot as plt  # noqa: E402

from llgbm.infra.io import write_atomic  # noqa: E402


def line_panels(series: dict[str, list[tuple[int, float]]], path: Path, title: str) -> None:
    """One small panel per named series of (step, value), in a grid, written to path as PNG."""
    names = [name for name, rows in series.items() if rows]
    if not names:
        return
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.6 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        steps, values = zip(*series[name])
        ax.plot(steps, values, linewidth=1)
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
        if min(values) > 0 and max(values) / min(values) > 100:
            ax.set_yscale("log")  # losses and gradient norms span decades
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def grouped_bars(values: dict[str, dict[str, float]], path: Path, title: str, label: str) -> None:
    """Horizontal bars: per row (e.g. a task), one bar per group (e.g. a method), written to path as PNG."""
    rows = list(values)
    groups = list(dict.fromkeys(g for row in values.values() for g in row))
    height = 0.8 / max(len(groups), 1)
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) * max(len(groups), 1) / 2 + 1.5))
    for i, group in enumerate(groups):
        ax.barh([r + i * height for r in range(len(rows))], [values[row].get(group, 0.0) for row in rows], height,
                label=group)
    ax.set_yticks([r + 0.4 - height / 2 for r in range(len(rows))], rows, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(label)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> None:
    try:
        write_atomic(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    finally:
        plt.close(fig)
