"""Stage `train`: the prompt-conditioned LoRA generator, weight MSE + lambda(t) * delta loss."""
from llgbm.config import Config
from llgbm.stage import (BASE_DIR, DELTAS_DIR, EMBEDDINGS_DIR, GENERATOR_DIR, RESULTS_DIR, TASKS_FILE,
                         TEACHERS_DIR, TRAIN_CHECKPOINTS_DIR, run_stage)
from llgbm.tasks import load_tasks
from llgbm.train import Paths, train_generator


def main(cfg: Config) -> None:
    paths = Paths(base=BASE_DIR, teachers=TEACHERS_DIR, deltas=DELTAS_DIR, embeddings=EMBEDDINGS_DIR,
                  generator=GENERATOR_DIR, checkpoints=TRAIN_CHECKPOINTS_DIR, live=RESULTS_DIR / "train")
    metrics = train_generator(cfg, load_tasks(TASKS_FILE), paths)
    print({k: round(v, 5) for k, v in metrics.items()})


if __name__ == "__main__":
    run_stage(main)
