"""The spec's acceptance criteria for multi-task training, on the micro configuration."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch

from llgbm.errors import LlgbmError
from llgbm.train import Paths, load_generator, train_generator

from .conftest import micro_config


def _paths(inputs: dict, run: Path) -> Paths:
    return Paths(base=inputs["base"], teachers=inputs["teachers"], deltas=inputs["deltas"],
                 embeddings=inputs["embeddings"], generator=run / "generator", checkpoints=run / "checkpoints",
                 live=run / "live")


def _curve(run: Path, name: str) -> list[float]:
    with open(run / "live" / "plots" / "metrics" / f"{name}.tsv") as handle:
        return [float(row[name]) for row in csv.DictReader(handle, delimiter="\t")]


@pytest.fixture(scope="module")
def trained(micro_train_inputs: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    run = tmp_path_factory.mktemp("train")
    cfg = micro_config(train={**micro_config().train.__dict__, "steps": 120, "save_interval": 40})
    metrics = train_generator(cfg, micro_train_inputs["tasks"], _paths(micro_train_inputs, run))
    return {"run": run, "cfg": cfg, "metrics": metrics, **micro_train_inputs}


def test_every_step_metric_is_logged_and_finite(trained) -> None:
    for name in ("loss_total", "loss_weights", "loss_delta", "lambda_delta", "delta_cosine_sim", "delta_pred_norm",
                 "delta_target_norm", "learning_rate", "grad_norm"):
        curve = _curve(trained["run"], name)
        assert len(curve) == 120, name
        assert all(math.isfinite(v) for v in curve), name


def test_lambda_follows_the_linear_schedule(trained) -> None:
    lambdas = _curve(trained["run"], "lambda_delta")
    # Step s (1-based) uses lambda at schedule step s - 1: linear over 10 warmup steps to 1.0.
    assert lambdas[:12] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.0])


def test_both_losses_decrease_and_delta_cosine_improves(trained) -> None:
    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    weights, delta, cosine = (_curve(trained["run"], n) for n in ("loss_weights", "loss_delta", "delta_cosine_sim"))
    assert mean(weights[-20:]) < 0.8 * mean(weights[:20])
    assert mean(delta[-20:]) < 0.8 * mean(delta[:20])
    assert mean(cosine[-20:]) > mean(cosine[:20])


def test_saved_generator_reproduces_its_outputs(trained) -> None:
    model, meta = load_generator(trained["run"] / "generator")
    again, _ = load_generator(trained["run"] / "generator")
    condition = torch.randn(3, meta["shape"]["prompts"], meta["shape"]["embed_dim"])
    with torch.no_grad():
        first, second = model(condition), again(condition)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert meta["heldout_tasks"] == ["largest"] and "largest" not in meta["training_tasks"]


def test_killed_and_resumed_run_ends_like_an_uninterrupted_one(micro_train_inputs, tmp_path) -> None:
    cfg = micro_config()
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train_generator(cfg, micro_train_inputs["tasks"], _paths(micro_train_inputs, straight))
    train_generator(cfg, micro_train_inputs["tasks"], _paths(micro_train_inputs, resumed), stop_after_step=25)
    assert not (resumed / "generator").exists()
    assert sorted(p.name for p in (resumed / "checkpoints").glob("*.pt")) == ["step-000010.pt", "step-000020.pt"]
    train_generator(cfg, micro_train_inputs["tasks"], _paths(micro_train_inputs, resumed))
    a, _ = load_generator(straight / "generator")
    b, _ = load_generator(resumed / "generator")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name
    assert _curve(resumed, "loss_total") == _curve(straight, "loss_total")  # no duplicated or lost steps


def test_nan_stops_training_naming_the_step(micro_train_inputs, tmp_path, monkeypatch) -> None:
    import llgbm.train as train_module

    real_loss = train_module.weight_token_loss
    calls = {"n": 0}

    def poisoned(*args):
        calls["n"] += 1
        loss = real_loss(*args)
        return loss * float("nan") if calls["n"] == 13 else loss

    monkeypatch.setattr(train_module, "weight_token_loss", poisoned)
    with pytest.raises(LlgbmError, match="at step 13"):
        train_generator(micro_config(), micro_train_inputs["tasks"], _paths(micro_train_inputs, tmp_path))
    assert [p.name for p in (tmp_path / "checkpoints").glob("*.pt")] == ["step-000010.pt"]
    assert not (tmp_path / "generator").exists()


def test_probe_mismatch_with_the_cache_is_an_error(micro_train_inputs, tmp_path) -> None:
    with pytest.raises(LlgbmError, match="probe set differs"):
        train_generator(micro_config(probe_count=3), micro_train_inputs["tasks"], _paths(micro_train_inputs, tmp_path))
