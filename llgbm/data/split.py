"""The train/held-out split: which tasks training may see, chosen once (by the split stage) and stored
in data/split.json, so that no later stage recomputes it."""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from llgbm.data.tasks import Task
from llgbm.infra.errors import LlgbmError
from llgbm.infra.io import read_json, write_json_atomic


def unsupported_heldout(pairs: dict[str, tuple[str, str]], heldout: list[str]) -> list[str]:
    """Held-out pairs whose selector or transform occurs in no training pair (no compositional support)."""
    training = [pair for name, pair in pairs.items() if name not in heldout]
    seen_selectors, seen_transforms = {s for s, _ in training}, {t for _, t in training}
    return [name for name in heldout if pairs[name][0] not in seen_selectors or pairs[name][1] not in seen_transforms]


def fold_heldout(names: list[str], pairs: dict[str, tuple[str, str]] | None, folds: int, fold: int,
                 seed: int) -> list[str]:
    """The `fold`-th of `folds` disjoint held-out sets that together hold out every task, in `names` order.
    With compositional pairs, pair (selector i, transform j), in a seeded order of each, falls in fold
    (i + j) mod folds: every fold holds each selector with about 1/folds of the transforms and each
    transform with about 1/folds of the selectors, so each held-out pair keeps its selector and its
    transform in training. Other tasks: a seeded round robin."""
    if not 2 <= folds <= len(names):
        raise LlgbmError(f"heldout_folds: {folds}, expected 2 to {len(names)} (the number of tasks)")
    if not 0 <= fold < folds:
        raise LlgbmError(f"heldout_fold: {fold}, expected 0 to {folds - 1}")
    rng = random.Random(f"{seed}:folds")
    if pairs is None:
        chosen = set(rng.sample(names, len(names))[fold::folds])
        return [n for n in names if n in chosen]
    selectors = rng.sample(sorted({s for s, _ in pairs.values()}), len({s for s, _ in pairs.values()}))
    transforms = rng.sample(sorted({t for _, t in pairs.values()}), len({t for _, t in pairs.values()}))
    heldout = [n for n in names if (selectors.index(pairs[n][0]) + transforms.index(pairs[n][1])) % folds == fold]
    unsupported = unsupported_heldout(pairs, heldout)
    if unsupported:
        raise LlgbmError(f"heldout_folds: {folds} folds leave {unsupported} of fold {fold} without compositional "
                         "support; use fewer folds")
    return heldout


def support_cover(order: list[str], pairs: dict[str, tuple[str, str]], heldout: list[str]) -> list[str]:
    """A smallest set of training tasks in which every selector and transform of a held-out pair occurs:
    a maximum matching of the missing selectors to the missing transforms through training pairs (each
    matched pair covers two parts), then one pair for each part left. Ties go by `order`."""
    selectors = list(dict.fromkeys(pairs[h][0] for h in heldout))
    transforms = list(dict.fromkeys(pairs[h][1] for h in heldout))
    edges = {s: [n for n in order if pairs[n][0] == s and pairs[n][1] in transforms] for s in selectors}
    matched: dict[str, str] = {}  # transform -> the pair that covers it with its selector

    def augment(selector: str, visited: set[str]) -> bool:
        for name in edges[selector]:
            transform = pairs[name][1]
            if transform not in visited:
                visited.add(transform)
                if transform not in matched or augment(pairs[matched[transform]][0], visited):
                    matched[transform] = name
                    return True
        return False

    for selector in selectors:
        augment(selector, set())
    cover = list(matched.values())
    covered_selectors = {pairs[n][0] for n in cover}
    for selector in selectors:
        if selector not in covered_selectors:
            cover += [n for n in order if pairs[n][0] == selector][:1]
    for transform in transforms:
        if transform not in matched:
            cover += [n for n in order if pairs[n][1] == transform][:1]
    return list(dict.fromkeys(cover))


def validation_names(pool: list[str], heldout: list[str], count: int, pairs: dict[str, tuple[str, str]] | None,
                     seed: int) -> list[str]:
    """`count` tasks of `pool` (the tasks not held out) kept out of training to choose hyperparameters on,
    so that no choice reads the held-out fold. One at a time, in a seeded order: of the tasks that keep
    every selector and transform of every held-out and validation pair in the tasks left for training,
    the first whose selector and transform the validation tasks hold least (so they spread over the
    factors: 10 of the 5 x 10 family hold each transform once). Kept in `pool` order."""
    if count == 0:
        return []
    if count >= len(pool):
        raise LlgbmError(f"validation_tasks: {count} asked for, but only {len(pool)} tasks are not held out and "
                         "training needs at least one")
    order = random.Random(f"{seed}:validation").sample(pool, len(pool))
    if pairs is None:
        chosen = set(order[:count])
        return [n for n in pool if n in chosen]
    candidates = {m: pairs[m] for m in [*pool, *heldout]}
    chosen: list[str] = []
    while len(chosen) < count:
        uses = Counter(part for c in chosen for part in pairs[c])
        keeping = [n for n in order if n not in chosen and not unsupported_heldout(candidates, [*heldout, *chosen, n])]
        if not keeping:
            raise LlgbmError(f"validation_tasks: {count} validation tasks cannot keep every held-out and validation "
                             f"pair's selector and transform in training; at most {len(chosen)} can")
        chosen.append(min(keeping, key=lambda n: uses[pairs[n][0]] + uses[pairs[n][1]]))
    return [n for n in pool if n in chosen]


def select_training_names(names: list[str], heldout: list[str], count: int | None,
                          pairs: dict[str, tuple[str, str]] | None, seed: int) -> list[str]:
    """The training tasks: every non-held-out name (count None), or `count` of them chosen by `seed`. With
    compositional pairs, first a cover of the held-out pairs' selectors and transforms, then the rest
    in a seeded order, so a smaller count's tasks are a subset of a larger count's. Kept in `names` order."""
    pool = [n for n in names if n not in heldout]
    if count is None:
        return pool
    order = random.Random(f"{seed}:training-tasks").sample(pool, len(pool))
    cover = support_cover(order, pairs, heldout) if pairs is not None else []
    if count < len(cover):
        raise LlgbmError(f"max_training_tasks: {count} training tasks cannot keep the compositional support of "
                         f"heldout_tasks; this selection needs at least {len(cover)}")
    if count > len(pool):
        raise LlgbmError(f"max_training_tasks: {count} asked for, only {len(pool)} tasks are not held out")
    chosen = set(cover + [n for n in order if n not in cover][: count - len(cover)])
    return [n for n in pool if n in chosen]


@dataclass(frozen=True)
class Split:
    """Task names training may see, the held-out ones (never seen by training: the final figure) and the
    validation ones (never seen by training either: what hyperparameters are chosen on). With
    max_training_tasks, the other tasks are none of these."""
    training: tuple[str, ...]
    heldout: tuple[str, ...]
    validation: tuple[str, ...] = ()

    def training_tasks(self, tasks: list[Task]) -> list[Task]:
        return [t for t in tasks if t.name in self.training]

    def heldout_tasks(self, tasks: list[Task]) -> list[Task]:
        return [t for t in tasks if t.name in self.heldout]

    def validation_tasks(self, tasks: list[Task]) -> list[Task]:
        return [t for t in tasks if t.name in self.validation]

    def save(self, path: Path) -> None:
        # Without validation tasks the file is what it was before they existed (the published testbed's).
        write_json_atomic(path, {"training": list(self.training), "heldout": list(self.heldout),
                                 **({"validation": list(self.validation)} if self.validation else {})})

    @classmethod
    def load(cls, path: Path) -> "Split":
        raw = read_json(path, "task split")
        if not (isinstance(raw, dict) and all(isinstance(raw.get(k), list) for k in ("training", "heldout"))
                and isinstance(raw.get("validation", []), list)):
            raise LlgbmError(f"{path}: not a task split (training, heldout and validation lists); rerun the split stage")
        return cls(tuple(raw["training"]), tuple(raw["heldout"]), tuple(raw.get("validation", [])))


def resolve_names(names: list[str], heldout: list[str], count: int | None, pairs: dict[str, tuple[str, str]] | None,
                  seed: int, validation_count: int = 0) -> Split:
    """The split of task `names`: `heldout`, `validation_count` validation tasks (`validation_names`, drawn
    before the training tasks so that every max_training_tasks shares them) and the training tasks that
    `select_training_names` chooses among the rest."""
    validation = validation_names([n for n in names if n not in heldout], heldout, validation_count, pairs, seed)
    chosen = select_training_names(names, [*heldout, *validation], count, pairs, seed)
    if not chosen:
        raise LlgbmError("heldout_tasks: every task is held out; nothing is left to train on")
    return Split(tuple(chosen), tuple(n for n in names if n in heldout), tuple(validation))


def resolve_split(tasks: list[Task], heldout: list[str], count: int | None, pairs: dict[str, tuple[str, str]] | None,
                  seed: int, validation_count: int = 0) -> Split:
    """The split of `tasks` (`resolve_names`), `heldout` checked to name tasks of them."""
    names = [t.name for t in tasks]
    unknown = [n for n in heldout if n not in names]
    if unknown:
        raise LlgbmError(f"heldout_tasks: {unknown} are not tasks of the tasks file (its tasks: {', '.join(names)})")
    return resolve_names(names, heldout, count, pairs, seed, validation_count)
