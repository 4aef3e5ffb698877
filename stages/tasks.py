"""Stage `tasks`: the built-in task family (or the user's task files) as data/tasks.json."""
from llgbm.config import Config
from llgbm.stage import TASKS_FILE, run_stage
from llgbm.tasks import make_tasks, save_tasks


def main(cfg: Config) -> None:
    tasks = make_tasks(cfg.tasks)
    save_tasks(tasks, TASKS_FILE)
    for task in tasks:
        print(f"{task.name}: {len(task.train)} train, {len(task.test)} test, {len(task.options)} options")


if __name__ == "__main__":
    run_stage(main)
