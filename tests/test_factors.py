"""Results per factor of the compositional family, and tasks below chance."""
import pytest

from llgbm.data.factors import below_chance, factor_means


def test_factor_means_average_over_the_tasks_holding_each_part() -> None:
    pairs = {"a_x": ("a", "x"), "a_y": ("a", "y"), "b_x": ("b", "x")}
    means = factor_means({"a_x": 1.0, "a_y": 0.5, "b_x": 0.0, "other": 0.7}, pairs)
    assert means == {"selector": {"a": pytest.approx(0.75), "b": 0.0}, "transform": {"x": 0.5, "y": 0.5}}
    assert factor_means({}, pairs) == {"selector": {}, "transform": {}}


def test_below_chance_names_the_tasks_under_their_own_chance() -> None:
    assert below_chance({"a": 0.1, "b": 0.5, "c": 0.25}, {"a": 1 / 6, "b": 0.5, "c": 0.5}) == ["a", "c"]
