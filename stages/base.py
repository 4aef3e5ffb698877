"""Stage `base`: the base model and tokenizer in models/base (tiny Qwen2 built here, or a hub model)."""
from llgbm.config import Config
from llgbm.io import atomic_dir, write_json_atomic
from llgbm.models import prepare_base
from llgbm.stage import BASE_DIR, RESULTS_DIR, TASKS_FILE, run_stage
from llgbm.tasks import load_tasks, pretraining_texts, vocabulary


def main(cfg: Config) -> None:
    tasks = load_tasks(TASKS_FILE)
    with atomic_dir(BASE_DIR) as out:
        metrics = prepare_base(cfg.base, vocabulary(tasks), pretraining_texts(cfg.tasks, tasks, cfg.base), out)
    write_json_atomic(RESULTS_DIR / "base" / "metrics.json", metrics)
    print(metrics)


if __name__ == "__main__":
    run_stage(main)
