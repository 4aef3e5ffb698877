"""Stage `diagnostics`: the zero-shot headroom of the testbed before any generator runs."""
from llgbm.config import Config
from llgbm.diagnostics import (baselines_summary, headroom, headroom_summary, markdown_report, structure,
                               structure_summary, teacher_baselines)
from llgbm.io import atomic_dir, write_json_atomic
from llgbm.stage import (BASE_DIR, DIAGNOSTICS_DIR, DIAGNOSTICS_REPORT, EMBEDDINGS_DIR, RESULTS_DIR, TASKS_FILE,
                         TEACHERS_DIR, run_stage)
from llgbm.tasks import load_tasks


def main(cfg: Config) -> None:
    tasks = load_tasks(TASKS_FILE)
    with atomic_dir(DIAGNOSTICS_DIR) as out:
        result = headroom(cfg, tasks, BASE_DIR, out)
        result["baselines"] = teacher_baselines(cfg, tasks, BASE_DIR, TEACHERS_DIR, EMBEDDINGS_DIR, out / "baselines")
    result["structure"] = structure(cfg, tasks, BASE_DIR, TEACHERS_DIR, EMBEDDINGS_DIR)
    summary = {**headroom_summary(result, tasks, cfg), **baselines_summary(result["baselines"], tasks),
               **structure_summary(result["structure"])}
    write_json_atomic(RESULTS_DIR / "diagnostics" / "metrics.json", summary)
    write_json_atomic(RESULTS_DIR / "diagnostics" / "per_task.json", result)
    DIAGNOSTICS_REPORT.write_text(markdown_report(summary, result))
    for key, value in summary.items():
        print(f"{key}: {value:.3f}")


if __name__ == "__main__":
    run_stage(main)
