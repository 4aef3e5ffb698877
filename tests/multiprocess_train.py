"""Run by tests/test_train_multiprocess.py under `accelerate launch`: one training run of the generator,
with every batch each rank draws written to draws-<rank>.jsonl.

usage: multiprocess_train.py PARAMS TASKS INPUTS_ROOT RUN_DIR [STOP_AFTER_STEP]
"""
import json
import os
import sys
from pathlib import Path

from llgbm.config import load_config
from llgbm.data.batching import GeneratorDataset
from llgbm.data.tasks import load_tasks
from llgbm.infra.paths import Paths
from llgbm.recipes.train import train_generator


def main() -> None:
    params, tasks_file, inputs, run = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
    stop = int(sys.argv[5]) if len(sys.argv) > 5 else None
    rank = int(os.environ["RANK"])  # set by the launcher
    log = run / f"draws-{rank}.jsonl"
    draw = GeneratorDataset.draw

    def logged_draw(self, batch_size, generator, *args, **kwargs):
        batch = draw(self, batch_size, generator, *args, **kwargs)
        with open(log, "a") as handle:
            handle.write(json.dumps({"index": batch["index"].tolist(),
                                     "condition": float(batch["condition"].sum())}) + "\n")
        return batch

    GeneratorDataset.draw = logged_draw
    paths = Paths(split=inputs / "split.json", base=inputs / "base", teachers=inputs / "teachers", deltas=inputs / "deltas",
                  embeddings=inputs / "embeddings", generator=run / "generator", checkpoints=run / "checkpoints",
                  live=run / "live")
    train_generator(load_config(params), load_tasks(tasks_file), paths, stop_after_step=stop)


if __name__ == "__main__":
    main()
