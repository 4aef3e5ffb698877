"""The seeds x tasks interval: by hand on a small table, and its coverage on simulated studies."""
from __future__ import annotations

import math
import random
import statistics

import pytest

from llgbm.study.crossed import complete_table, crossed_mean, fold_stratified_mean, holm, verdict


def _table(seeds: int, tasks: int, effect: float, sd_seed: float, sd_task: float, sd_e: float,
           rng: random.Random) -> dict[tuple[int, str], float]:
    seed_effects = [rng.gauss(0, sd_seed) for _ in range(seeds)]
    task_effects = [rng.gauss(0, sd_task) for _ in range(tasks)]
    return {(s, f"t{j}"): effect + seed_effects[s] + task_effects[j] + rng.gauss(0, sd_e)
            for s in range(seeds) for j in range(tasks)}


def test_crossed_mean_by_hand() -> None:
    # Seeds add 0 / 0.2, tasks 0 / 0.1 / 0.5: no interaction, so the mean squares are exact.
    cells = {(s, f"t{j}"): 0.2 * s + [0.0, 0.1, 0.5][j] for s in range(2) for j in range(3)}
    estimate = crossed_mean(cells)
    assert estimate.mean == pytest.approx(statistics.fmean(cells.values()))
    ms_seed = 3 * 2 * 0.1 ** 2 / 1  # seed means 0.2 and 0.4 around 0.3
    task_means = [0.1, 0.2, 0.6]
    ms_task = 2 * sum((m - 0.3) ** 2 for m in task_means) / 2
    assert estimate.standard_error == pytest.approx(math.sqrt((ms_seed + ms_task) / 6))
    parts = (ms_seed / 6, ms_task / 6)
    assert estimate.df == pytest.approx(sum(parts) ** 2 / (parts[0] ** 2 / 1 + parts[1] ** 2 / 2))


def test_a_seed_missing_a_task_leaves_the_table_whole() -> None:
    cells = {(s, t): 1.0 for s in range(3) for t in ("a", "b")}
    del cells[(1, "b")]
    seeds, tasks, _ = complete_table(cells)
    assert seeds == [0, 2] and tasks == ["a", "b"]
    with pytest.raises(ValueError, match="2 seeds and 2 tasks"):
        crossed_mean({(0, "a"): 1.0, (0, "b"): 2.0})


@pytest.mark.parametrize("sd_seed, sd_task, sd_e", [(0.015, 0.125, 0.05), (0.05, 0.02, 0.05), (0.03, 0.08, 0.0)])
def test_interval_covers_the_true_effect_about_95_percent(sd_seed: float, sd_task: float, sd_e: float) -> None:
    # The first study's shape: 5 seeds x 8 held-out tasks, task SD 0.125 (measured), seed SD 0.015.
    rng = random.Random(0)
    trials, covered = 1500, 0
    for _ in range(trials):
        low, high = crossed_mean(_table(5, 8, 0.05, sd_seed, sd_task, sd_e, rng)).interval()
        covered += low <= 0.05 <= high
    assert 0.93 <= covered / trials <= 0.99  # the estimator is slightly conservative by design


def test_a_seed_only_interval_under_covers_when_tasks_vary() -> None:
    # What the first study did: a t interval over seeds of the per-seed mean over the same 8 tasks.
    from llgbm.study.stats import mean_ci

    rng = random.Random(1)
    trials, covered = 800, 0
    for _ in range(trials):
        cells = _table(5, 8, 0.05, 0.015, 0.125, 0.05, rng)
        mean, half = mean_ci([statistics.fmean(cells[(s, f"t{j}")] for j in range(8)) for s in range(5)])
        covered += mean - half <= 0.05 <= mean + half
    assert covered / trials < 0.6


def test_holm_by_hand_and_verdicts() -> None:
    assert holm({"a": 0.01, "b": 0.04, "c": 0.03}) == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06})
    rng = random.Random(2)
    clear = crossed_mean(_table(5, 8, 0.2, 0.01, 0.02, 0.01, rng))
    assert verdict(clear, 0.03) == "better" and verdict(clear, 0.03, adjusted_p=0.2) != "better"
    null = crossed_mean(_table(5, 40, 0.0, 0.001, 0.005, 0.005, rng))
    assert verdict(null, 0.03) == "equivalent within ±0.03"
    noisy = crossed_mean(_table(5, 8, 0.0, 0.01, 0.2, 0.05, rng))
    assert verdict(noisy, 0.03) == "not shown either way"


def _folded(folds: int, seeds: int, tasks: int, effect: float, sd_run: float, sd_task: float, sd_e: float,
            rng: random.Random) -> dict[tuple[tuple[int, int], str], float]:
    """Every fold its own runs (a run effect per (fold, seed)) and its own tasks (disjoint across folds)."""
    cells = {}
    for fold in range(folds):
        for (seed, task), value in _table(seeds, tasks, effect, sd_run, sd_task, sd_e, rng).items():
            cells[((fold, seed), f"f{fold}{task}")] = value
    return cells


def test_one_fold_is_the_crossed_mean_and_folds_pool_every_cell() -> None:
    rng = random.Random(3)
    single = _table(3, 8, 0.1, 0.02, 0.1, 0.03, rng)
    assert fold_stratified_mean({((-1, s), t): v for (s, t), v in single.items()}) == crossed_mean(single)
    cells = _folded(5, 3, 10, 0.1, 0.02, 0.1, 0.03, rng)
    pooled = fold_stratified_mean(cells)
    assert pooled.mean == pytest.approx(statistics.fmean(cells.values()))
    assert (pooled.folds, pooled.seeds, pooled.tasks) == (5, 3, 50)
    per_fold = [crossed_mean({(s, t): v for ((f, s), t), v in cells.items() if f == fold}) for fold in range(5)]
    assert pooled.standard_error == pytest.approx(math.sqrt(sum(e.standard_error ** 2 for e in per_fold)) / 5)
    # A fold without 2 seeds is left out, and said so by the fold count.
    del cells[((4, 1), "f4t0")], cells[((4, 2), "f4t0")]
    assert fold_stratified_mean(cells).folds == 4


@pytest.mark.parametrize("sd_run, sd_task, sd_e", [(0.015, 0.125, 0.05), (0.05, 0.02, 0.05)])
def test_the_fold_stratified_interval_covers_about_95_percent(sd_run: float, sd_task: float, sd_e: float) -> None:
    # The second study's shape: 5 folds x 3 seeds x 10 held-out tasks per fold.
    rng = random.Random(4)
    trials, covered = 1000, 0
    for _ in range(trials):
        low, high = fold_stratified_mean(_folded(5, 3, 10, 0.05, sd_run, sd_task, sd_e, rng)).interval()
        covered += low <= 0.05 <= high
    assert 0.93 <= covered / trials <= 0.995
