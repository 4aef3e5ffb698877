"""The comparison's statistics: Student's t intervals over seeds, raw and paired by seed.

Runs that share a seed share the generator's initialisation, data order and evaluation prompt batches, so
arms are compared through per-seed differences (a paired t interval), never as independent samples. The t
distribution's quantiles and tails are scipy.stats'."""
from __future__ import annotations

import math
import statistics
from collections.abc import Mapping

from scipy import stats as scipy_stats


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with df degrees of freedom."""
    if df <= 0:
        raise ValueError(f"t distribution needs df > 0, got {df}")
    return float(scipy_stats.t.cdf(t, df))


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with df degrees of freedom: the two-sided p-value of t."""
    if df <= 0:
        raise ValueError(f"t distribution needs df > 0, got {df}")
    return float(2.0 * scipy_stats.t.sf(abs(t), df))


def t_quantile(p: float, df: float) -> float:
    """The p quantile of Student's t (0.5 <= p < 1)."""
    if not 0.5 <= p < 1.0:
        raise ValueError(f"t_quantile needs 0.5 <= p < 1, got {p}")
    if df <= 0:
        raise ValueError(f"t distribution needs df > 0, got {df}")
    return float(scipy_stats.t.ppf(p, df))


def t_quantile_975(df: int) -> float:
    """t(0.975, df): the factor of a two-sided 95% interval with df degrees of freedom (df >= 1)."""
    if df < 1:
        raise ValueError(f"a t interval needs df >= 1, got {df}")
    return t_quantile(0.975, df)


def mean_ci(values: list[float]) -> tuple[float, float | None]:
    """Mean and half-width of its 95% interval over seeds (t, df = n - 1); None for a single value."""
    if not values:
        raise ValueError("mean_ci needs at least one value")
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None
    return mean, t_quantile_975(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))


def paired_difference(values: Mapping[int, float], reference: Mapping[int, float]
                      ) -> tuple[float, float | None, int] | None:
    """arm - reference matched by seed: the mean of the per-seed differences, the half-width of its 95% t
    interval (None for one common seed) and the number of common seeds; None when no seed is in both."""
    common = sorted(set(values) & set(reference))
    if not common:
        return None
    mean, half = mean_ci([values[s] - reference[s] for s in common])
    return mean, half, len(common)


def detectable_difference(half_width: float, n: int, power: float = 0.8) -> float:
    """The smallest true mean difference that a two-sided 5% paired t test over n seeds detects with
    probability `power`, from the observed 95% half-width: (t(0.975) + t(power)) * sd / sqrt(n), with df =
    n - 1 (the usual approximation; sd is estimated from the same seeds, so this is itself uncertain)."""
    if n < 2:
        raise ValueError(f"a detectable difference needs at least 2 seeds, got {n}")
    t_interval = t_quantile_975(n - 1)
    return (t_interval + t_quantile(power, n - 1)) * half_width / t_interval
