"""The tasks recipe: the built-in task family (or the user's task files) as data/tasks.json."""
from __future__ import annotations

from llgbm.config import Config
from llgbm.data.tasks import make_tasks, save_tasks
from llgbm.infra.paths import TASK_FILES_DIR, TASKS_FILE


def run(cfg: Config) -> None:
    tasks = make_tasks(cfg.tasks, TASK_FILES_DIR)
    save_tasks(tasks, TASKS_FILE)
    for task in tasks:
        print(f"{task.name}: {len(task.train)} train, {len(task.test)} test, {len(task.options)} options")
