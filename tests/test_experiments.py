import pytest

from llgbm.experiments import comparison_report, grid_arms, mean_ci, queue_commands

DEFAULTS = {"lambda_delta": 1.0, "delta_loss_type": "mse", "probe_count": 5, "lambda_schedule": "linear",
            "delta_reduce": "mean", "delta_layers": "last", "loss_balance": "none", "behaviour_loss": "delta"}


def test_grid_covers_the_spec_once_each() -> None:
    arms = grid_arms(DEFAULTS)
    assert len(arms) == len({tuple(sorted(a.items())) for a in arms})
    assert {a["lambda_delta"] for a in arms} == {0.0, 0.1, 0.5, 1.0, 2.0}
    assert {a["delta_loss_type"] for a in arms} == {"mse", "cosine", "combined"}
    assert {a["probe_count"] for a in arms} == {3, 5, 10}
    assert {a["lambda_schedule"] for a in arms} == {"constant", "linear", "cosine"}
    for ld in (0.1, 1.0):
        for lt in ("mse", "cosine"):
            assert {**DEFAULTS, "lambda_delta": ld, "delta_loss_type": lt} in arms
    assert {a["delta_reduce"] for a in arms} == {"mean", "per_probe"}
    assert {a["delta_layers"] for a in arms} == {"last", "all"}
    assert {a["loss_balance"] for a in arms} == {"none", "grad_norm"}
    assert {a["behaviour_loss"] for a in arms} == {"delta", "kl"}
    assert len(arms) == 16
    command = queue_commands(arms[:1], [0, 1, 2])[0]
    assert command[:4] == ["dvc", "exp", "run", "--queue"] and command[-1] == "seed=0,1,2"


def test_mean_and_confidence_interval() -> None:
    mean, half = mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.303 * 1.0 / 3**0.5)
    assert mean_ci([0.5]) == (0.5, None)


def _row(name: str, lambda_delta: float, seed: int, accuracy: float) -> dict:
    return {"Experiment": name, "rev": name, "lambda_delta": lambda_delta, "delta_loss_type": "mse",
            "probe_count": 5, "lambda_schedule": "linear", "seed": seed,
            "heldout.accuracy.generated": accuracy, "heldout.gain_share.generated": accuracy / 2,
            "heldout.delta_cosine_mean.generated": 0.9, "seen.accuracy.generated": 0.5}


def test_report_compares_each_arm_with_weight_only() -> None:
    rows = [_row("a0", 0.0, 0, 0.10), _row("a1", 0.0, 1, 0.20), _row("a2", 0.0, 2, 0.30),
            _row("b0", 1.0, 0, 0.40), _row("b1", 1.0, 1, 0.50), _row("b2", 1.0, 2, 0.60),
            {**_row("q", 2.0, 0, 0.0), "heldout.accuracy.generated": None},  # queued: no metrics yet
            {**_row("main", 1.0, 0, 0.9), "Experiment": None, "typ": "baseline"},  # the workspace's commit
            {**_row("b0-again", 1.0, 0, 0.9)},  # the same arm and seed twice counts once
            {**_row("layers", 1.0, 0, 0.7), "delta_layers": [0.0, 1.0]}]  # a list param, as exp_show gives it
    report = comparison_report(rows)
    assert "lambda_delta=2.0" not in report
    assert "delta_layers=(0, 1)" in report
    baseline = next(line for line in report.splitlines() if "lambda_delta=0.0" in line)
    delta_arm = next(line for line in report.splitlines() if "lambda_delta=1.0" in line and "(0, 1)" not in line)
    assert "| 3 | 0.200 ± 0.248" in baseline and baseline.endswith("| baseline | baseline |")
    assert "| 3 | 0.500 ± 0.248" in delta_arm and delta_arm.endswith("| +0.300 ± 0.160 | +0.000 ± 0.000 |")
