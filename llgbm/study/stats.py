"""The comparison's statistics: Student's t intervals over seeds, raw and paired by seed.

Runs that share a seed share the generator's initialisation, data order and evaluation prompt batches, so
arms are compared through per-seed differences (a paired t interval), never as independent samples."""
from __future__ import annotations

import math
import statistics
from collections.abc import Mapping

# Continued-fraction and bisection tolerances: far below the 3 decimals a report shows.
_CF_EPS = 1e-15
_CF_MAX_ITER = 500
_BISECT_TOL = 1e-12


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function, evaluated by the modified Lentz method."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, _CF_MAX_ITER + 1):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            step = c * d
            result *= step
        if abs(step - 1.0) < _CF_EPS:
            return result
    raise ArithmeticError(f"incomplete beta continued fraction did not converge (a={a}, b={b}, x={x})")


def regularized_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularised incomplete beta function, for a, b > 0 and 0 <= x <= 1."""
    if not (a > 0 and b > 0 and 0.0 <= x <= 1.0):
        raise ValueError(f"regularized_beta needs a, b > 0 and 0 <= x <= 1, got a={a}, b={b}, x={x}")
    if x in (0.0, 1.0):
        return x
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    # The fraction converges fast on the side of the mean; the symmetry I_x(a, b) = 1 - I_{1-x}(b, a) covers the other.
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with df degrees of freedom."""
    if df <= 0:
        raise ValueError(f"t distribution needs df > 0, got {df}")
    tail = 0.5 * regularized_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The p quantile of Student's t (0.5 <= p < 1), by bisection on t_cdf."""
    if not 0.5 <= p < 1.0:
        raise ValueError(f"t_quantile needs 0.5 <= p < 1, got {p}")
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        low, high = high, 2.0 * high
    while high - low > _BISECT_TOL * max(1.0, high):
        middle = 0.5 * (low + high)
        if t_cdf(middle, df) < p:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


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
