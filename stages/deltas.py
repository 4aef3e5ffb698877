"""Stage `deltas`: the probe set, v(base) once, and the delta of every teacher checkpoint (cached)."""
from llgbm.config import Config
from llgbm.delta_cache import fill_cache
from llgbm.io import write_json_atomic
from llgbm.stage import BASE_DIR, DELTAS_DIR, RESULTS_DIR, TASKS_FILE, TEACHERS_DIR, run_stage
from llgbm.tasks import load_tasks


def main(cfg: Config) -> None:
    metrics = fill_cache(cfg, load_tasks(TASKS_FILE), BASE_DIR, TEACHERS_DIR, DELTAS_DIR)
    write_json_atomic(RESULTS_DIR / "deltas" / "metrics.json", metrics)
    print(metrics)


if __name__ == "__main__":
    run_stage(main)
