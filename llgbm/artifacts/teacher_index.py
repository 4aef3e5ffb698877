"""The teachers' index (models/teachers/index.json): every checkpoint of every task, one reader."""
from __future__ import annotations

from pathlib import Path

from llgbm.infra.errors import LlgbmError
from llgbm.infra.io import read_json, write_json_atomic

INDEX = "index.json"


def write_index(teachers_dir: Path, checkpoints: list[dict]) -> None:
    """checkpoints: {"task", "step", "path" (relative to teachers_dir), metrics...} per checkpoint."""
    write_json_atomic(Path(teachers_dir) / INDEX, {"checkpoints": checkpoints})


def read_index(teachers_dir: Path) -> list[dict]:
    """Every checkpoint entry, in the order the teachers stage wrote them."""
    path = Path(teachers_dir) / INDEX
    raw = read_json(path, "teachers index")
    entries = raw.get("checkpoints") if isinstance(raw, dict) else None
    if not isinstance(entries, list) or not all(isinstance(c, dict) and {"task", "step", "path"} <= c.keys()
                                                 for c in entries):
        raise LlgbmError(f"{path}: not a teachers index (a list of checkpoints with task, step and path); "
                         "rerun the teachers stage")
    return entries


def final_checkpoints(teachers_dir: Path) -> dict[str, Path]:
    """Each task's last checkpoint directory."""
    return {c["task"]: Path(teachers_dir) / c["path"] for c in sorted(read_index(teachers_dir), key=lambda c: c["step"])}
