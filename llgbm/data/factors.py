"""Results read per factor of the compositional family: a generator that composes must do well on every
selector and every transform, and one that snaps to a neighbouring seen task scores below chance, which a
mean hides."""
from __future__ import annotations

FACTORS = ("selector", "transform")  # the parts of a (selector, transform) pair, in its order


def factor_means(values: dict[str, float], pairs: dict[str, tuple[str, str]]) -> dict[str, dict[str, float]]:
    """Per factor, per value of it, the mean of `values` (task -> number) over the tasks holding it, for the
    tasks of `values` that are pairs; values sorted by name."""
    means: dict[str, dict[str, float]] = {}
    for index, factor in enumerate(FACTORS):
        groups: dict[str, list[float]] = {}
        for task, value in values.items():
            if task in pairs:
                groups.setdefault(pairs[task][index], []).append(value)
        means[factor] = {part: sum(v) / len(v) for part, v in sorted(groups.items())}
    return means


def below_chance(values: dict[str, float], chance: dict[str, float]) -> list[str]:
    """The tasks whose value is below their chance level: an adapter that answers another task's answers."""
    return [task for task, value in values.items() if value < chance[task]]
