"""Stage `teachers`: per task, the last K snapshots of a PEFT LoRA trajectory from one shared init."""
from llgbm.config import Config
from llgbm.io import atomic_dir, write_json_atomic
from llgbm.stage import BASE_DIR, RESULTS_DIR, TASKS_FILE, TEACHERS_DIR, run_stage
from llgbm.tasks import load_tasks
from llgbm.teachers import train_all_teachers


def main(cfg: Config) -> None:
    tasks = load_tasks(TASKS_FILE)
    with atomic_dir(TEACHERS_DIR) as out:
        summary = train_all_teachers(BASE_DIR, tasks, cfg, out)
    write_json_atomic(RESULTS_DIR / "teachers" / "metrics.json", summary)


if __name__ == "__main__":
    run_stage(main)
