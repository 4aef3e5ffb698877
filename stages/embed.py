"""Stage `embed`: the frozen encoder's embedding of every prompt (train and test) of every task."""
from llgbm.config import Config
from llgbm.encoder import embed_prompts
from llgbm.io import atomic_dir
from llgbm.stage import EMBEDDINGS_DIR, TASKS_FILE, run_stage
from llgbm.tasks import load_tasks


def main(cfg: Config) -> None:
    tasks = load_tasks(TASKS_FILE)
    prompts = [r.prompt for t in tasks for r in (*t.train, *t.test)]
    cache = embed_prompts(cfg.encoder, prompts)
    with atomic_dir(EMBEDDINGS_DIR) as out:
        cache.save(out)
    print(f"{len(cache.row)} prompts embedded, dimension {cache.dim}")


if __name__ == "__main__":
    run_stage(main)
