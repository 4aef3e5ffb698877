"""The embed recipe: the frozen encoder's embedding of every prompt (train and test) of every task (with
encoder.model "factors", each prompt's task's parts, one-hot)."""
from __future__ import annotations

from llgbm.config import Config
from llgbm.data.encoder import FACTORS, EmbeddingCache, embed_prompts, factor_embeddings
from llgbm.data.tasks import load_tasks, task_pairs
from llgbm.infra.io import atomic_dir
from llgbm.infra.paths import EMBEDDINGS_DIR, TASKS_FILE


def run(cfg: Config) -> None:
    tasks = load_tasks(TASKS_FILE)
    prompts = [r.condition for t in tasks for r in (*t.train, *t.test)]  # what the generator reads
    if cfg.encoder.model == FACTORS:
        pairs = task_pairs(cfg.tasks)  # the config allows "factors" only where the tasks are pairs
        part_of = {r.condition: pairs[t.name] for t in tasks for r in (*t.train, *t.test)}  # each prompt once
        cache = EmbeddingCache(list(part_of), factor_embeddings(list(part_of.values()), cfg.tasks.selectors,
                                                                cfg.tasks.transforms), FACTORS)
    else:
        cache = embed_prompts(cfg.encoder, prompts)
    with atomic_dir(EMBEDDINGS_DIR) as out:
        cache.save(out)
    print(f"{len(cache.row)} prompts embedded, dimension {cache.dim}")
