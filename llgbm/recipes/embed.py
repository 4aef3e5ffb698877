"""The embed recipe: the frozen encoder's embedding of every prompt (train and test) of every task."""
from __future__ import annotations

from llgbm.config import Config
from llgbm.data.encoder import embed_prompts
from llgbm.data.tasks import load_tasks
from llgbm.infra.io import atomic_dir
from llgbm.infra.paths import EMBEDDINGS_DIR, TASKS_FILE


def run(cfg: Config) -> None:
    tasks = load_tasks(TASKS_FILE)
    prompts = [r.condition for t in tasks for r in (*t.train, *t.test)]  # what the generator reads
    cache = embed_prompts(cfg.encoder, prompts)
    with atomic_dir(EMBEDDINGS_DIR) as out:
        cache.save(out)
    print(f"{len(cache.row)} prompts embedded, dimension {cache.dim}")
