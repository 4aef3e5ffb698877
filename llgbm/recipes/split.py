"""The split recipe: which tasks training may see and which are held out, resolved once into
data/split.json (every later stage reads it; none recomputes it)."""
from __future__ import annotations

from llgbm.config import Config, heldout_names
from llgbm.data.split import resolve_split
from llgbm.data.tasks import load_tasks, task_pairs
from llgbm.infra.paths import SPLIT_FILE, TASKS_FILE


def run(cfg: Config) -> None:
    tasks = load_tasks(TASKS_FILE)
    split = resolve_split(tasks, heldout_names(cfg, [t.name for t in tasks]), cfg.max_training_tasks,
                          task_pairs(cfg.tasks), cfg.tasks.seed, cfg.validation_tasks)
    split.save(SPLIT_FILE)
    print(f"{len(split.training)} training tasks, {len(split.heldout)} held out: {', '.join(split.heldout)}"
          + (f"; {len(split.validation)} validation: {', '.join(split.validation)}" if split.validation else ""))
