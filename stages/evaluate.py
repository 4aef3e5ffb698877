"""Stage `evaluate`: generated adapters on held-out and seen tasks against base, teacher, mean-teacher
and nearest-teacher baselines, every adapter loaded through PEFT."""
import csv

from llgbm.config import Config
from llgbm.evaluate import accuracy_rows, markdown_report, run_evaluation
from llgbm.io import atomic_dir, write_json_atomic
from llgbm.stage import (BASE_DIR, DELTAS_DIR, EMBEDDINGS_DIR, EVALUATION_ADAPTERS_DIR, GENERATOR_DIR, RESULTS_DIR,
                         TASKS_FILE, TEACHERS_DIR, TRAIN_CHECKPOINTS_DIR, run_stage)
from llgbm.tasks import load_tasks
from llgbm.train import Paths


def main(cfg: Config) -> None:
    paths = Paths(base=BASE_DIR, teachers=TEACHERS_DIR, deltas=DELTAS_DIR, embeddings=EMBEDDINGS_DIR,
                  generator=GENERATOR_DIR, checkpoints=TRAIN_CHECKPOINTS_DIR, live=RESULTS_DIR / "train")
    with atomic_dir(EVALUATION_ADAPTERS_DIR) as adapters:
        summary, per_task = run_evaluation(cfg, load_tasks(TASKS_FILE), paths, adapters, cfg.evaluate.prompt_batches)
    out = RESULTS_DIR / "evaluate"
    write_json_atomic(out / "metrics.json", summary)
    write_json_atomic(out / "per_task.json", per_task)
    (out / "report.md").write_text(markdown_report(summary, per_task))
    (out / "plots").mkdir(parents=True, exist_ok=True)
    with open(out / "plots" / "accuracy.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["label", "task", "method", "accuracy"])
        writer.writeheader()
        writer.writerows(accuracy_rows(per_task))


if __name__ == "__main__":
    run_stage(main)
