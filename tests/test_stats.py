import math
import statistics

import pytest

from llgbm.study.stats import (
    detectable_difference,
    mean_ci,
    paired_difference,
    t_cdf,
    t_quantile,
    t_quantile_975,
    t_two_sided_p,
)


def test_t_quantiles() -> None:
    # Closed forms: df = 1 is the Cauchy distribution, df = 2 has t = (2p - 1) sqrt(2 / (4 p (1 - p))).
    assert t_quantile_975(1) == pytest.approx(math.tan(math.pi * 0.475), rel=1e-10)
    assert t_quantile_975(2) == pytest.approx(0.95 * math.sqrt(2 / (4 * 0.975 * 0.025)), rel=1e-10)
    # Tables (R's qt(0.975, df)).
    for df, value in [(1, 12.7062047362), (2, 4.30265272975), (4, 2.77644510520), (9, 2.26215716280),
                      (29, 2.04522964213), (1000, 1.96233908083)]:
        assert t_quantile_975(df) == pytest.approx(value, rel=1e-9), df
    assert t_cdf(0.0, 3) == 0.5 and t_cdf(-2.0, 5) + t_cdf(2.0, 5) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        t_quantile_975(0)


def test_a_t_quantile_and_a_p_value_against_known_values() -> None:
    # Known values, not computed with scipy: t(0.975, df = 4) = 2.776445 (any t table) and the two-sided
    # p-value of t = 2.0 at df = 10, 0.07338803 (R's 2 * pt(-2, 10)).
    assert t_quantile(0.975, 4) == pytest.approx(2.776445, abs=1e-6)
    assert t_two_sided_p(2.0, 10) == pytest.approx(0.07338803, abs=1e-8)
    assert t_two_sided_p(-2.0, 10) == t_two_sided_p(2.0, 10)
    # At df = 2 both have closed forms: t(p) = (2p - 1) / sqrt(2p(1 - p)), P(|T| >= t) = 1 - t / sqrt(2 + t^2).
    assert t_quantile(0.8, 2) == pytest.approx(0.6 / math.sqrt(2 * 0.8 * 0.2), rel=1e-10)
    assert t_two_sided_p(1.5, 2) == pytest.approx(1 - 1.5 / math.sqrt(2 + 1.5**2), rel=1e-10)
    assert t_two_sided_p(0.0, 7) == 1.0
    with pytest.raises(ValueError):
        t_quantile(0.4, 3)
    with pytest.raises(ValueError):
        t_two_sided_p(1.0, 0)


def test_mean_and_confidence_interval() -> None:
    mean, half = mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.30265272975 / 3**0.5)
    assert mean_ci([0.5]) == (0.5, None)


def test_paired_difference_by_hand_and_pairing_narrows() -> None:
    reference = {0: 0.10, 1: 0.20, 2: 0.30}
    arm = {0: 0.15, 1: 0.24, 2: 0.37}  # tracks the reference seed by seed
    mean, half, n = paired_difference(arm, reference)
    # Per-seed differences 0.05, 0.04, 0.07: mean 0.16 / 3; squared deviations from it sum to 14/30000, so
    # the variance is 7/30000 and the half-width t(0.975, 2) * sqrt(7/30000 / 3) = 4.30265 * 0.0088192.
    assert n == 3
    assert mean == pytest.approx(0.16 / 3)
    assert half == pytest.approx(4.30265272975 * math.sqrt(7 / 30000 / 3))
    assert half == pytest.approx(0.037946, abs=1e-6)
    # Unpaired, the seed-to-seed spread of both arms enters: ten times wider.
    unpaired = t_quantile_975(2) * math.sqrt(statistics.variance(arm.values()) / 3
                                             + statistics.variance(reference.values()) / 3)
    assert unpaired == pytest.approx(0.3704, abs=1e-4)
    assert half < unpaired / 5


def test_detectable_difference_by_hand() -> None:
    # df = 2: t(p) = (2p - 1) / sqrt(2p(1 - p)); half-width h = t(0.975) sd / sqrt(n)
    t975, t80 = 0.95 / math.sqrt(2 * 0.975 * 0.025), 0.6 / math.sqrt(2 * 0.8 * 0.2)
    assert detectable_difference(0.1, 3) == pytest.approx((t975 + t80) * 0.1 / t975, rel=1e-9)
    assert detectable_difference(0.1, 3, power=0.5) == pytest.approx(0.1, rel=1e-9)  # t(0.5) = 0: the interval itself
    with pytest.raises(ValueError):
        detectable_difference(0.1, 1)


def test_seeds_are_matched_not_positionally() -> None:
    arm = {3: 0.5, 0: 0.4, 2: 0.6}
    reference = {0: 0.1, 1: 0.9, 2: 0.2}
    mean, half, n = paired_difference(arm, reference)  # seeds 0 and 2 only: differences 0.3 and 0.4
    assert n == 2 and mean == pytest.approx(0.35)
    assert half == pytest.approx(12.7062047362 * statistics.stdev([0.3, 0.4]) / math.sqrt(2))
    assert paired_difference({0: 0.5}, {0: 0.2})[1] is None
    assert paired_difference({5: 0.5}, {0: 0.2}) is None
