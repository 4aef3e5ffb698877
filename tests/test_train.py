"""The spec's acceptance criteria for multi-task training, on the micro configuration."""
from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from llgbm.artifacts.generator_files import load_generator
from llgbm.infra.errors import LlgbmError
from llgbm.infra.paths import Paths
from llgbm.infra.provenance import library_versions
from llgbm.recipes.train import FINISHED, PROVENANCE, train_generator

from .conftest import micro_config, micro_training


def _paths(inputs: dict, run: Path) -> Paths:
    return Paths(split=inputs["split"], base=inputs["base"], teachers=inputs["teachers"], deltas=inputs["deltas"],
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
    for name in ("loss_total", "loss_weights", "loss_behaviour", "lambda_delta", "delta_cosine_sim", "delta_pred_norm",
                 "delta_target_norm", "learning_rate", "grad_norm"):
        curve = _curve(trained["run"], name)
        assert len(curve) == 120, name
        assert all(math.isfinite(v) for v in curve), name


def test_lambda_follows_the_linear_schedule(trained) -> None:
    lambdas = _curve(trained["run"], "lambda_delta")
    # Step s (1-based) uses lambda at schedule step s - 1: linear over 10 warmup steps to 1.0.
    assert lambdas[:12] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.0])


def test_the_delta_loss_decreases_and_delta_cosine_improves(trained) -> None:
    # (L_weights starts at its floor here: the generator starts at the mean target, and the micro teachers,
    # 30 steps from one shared init, are close to their mean; with lambda 1 and gradient balancing the delta
    # term then pulls the weights away from it.)
    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    weights, delta, cosine = (_curve(trained["run"], n) for n in ("loss_weights", "loss_behaviour", "delta_cosine_sim"))
    assert weights[0] < mean(weights[-20:]) < 1.0
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


def _assert_same_generator(a_dir: Path, b_dir: Path) -> None:
    a, _ = load_generator(a_dir)
    b, _ = load_generator(b_dir)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name


@pytest.fixture(scope="module")
def straight_run(micro_train_inputs, tmp_path_factory) -> Path:
    """The micro configuration trained without interruption."""
    run = tmp_path_factory.mktemp("straight")
    train_generator(micro_config(), micro_train_inputs["tasks"], _paths(micro_train_inputs, run))
    return run


def test_killed_and_resumed_run_ends_like_an_uninterrupted_one(micro_train_inputs, straight_run, tmp_path) -> None:
    cfg, resumed = micro_config(), tmp_path / "resumed"
    train_generator(cfg, micro_train_inputs["tasks"], _paths(micro_train_inputs, resumed), stop_after_step=25)
    assert not (resumed / "generator").exists()
    assert sorted(p.name for p in (resumed / "checkpoints").glob("*.pt")) == ["step-000010.pt", "step-000020.pt"]
    # DVC removes a stage's (non-persistent) plots before rerunning it: the history must come back anyway.
    shutil.rmtree(resumed / "live")
    train_generator(cfg, micro_train_inputs["tasks"], _paths(micro_train_inputs, resumed))
    _assert_same_generator(straight_run / "generator", resumed / "generator")
    for name in ("loss_total", "learning_rate", "grad_norm"):
        assert _curve(resumed, name) == _curve(straight_run, name), name  # every step once, none lost
    with open(resumed / "live" / "plots" / "metrics" / "loss_total.tsv") as handle:
        assert [int(row["step"]) for row in csv.DictReader(handle, delimiter="\t")] == list(range(1, 41))


def test_finished_run_leaves_nothing_to_resume(straight_run) -> None:
    assert not list((straight_run / "checkpoints").glob("*.pt"))
    assert (straight_run / "checkpoints" / FINISHED).is_file()


def test_finished_run_says_what_ran_it(straight_run) -> None:
    provenance = json.loads((straight_run / "live" / PROVENANCE).read_text())
    assert provenance["libraries"] == library_versions() and provenance["precision"] == "no"
    assert provenance["device"] == "cpu" and provenance["processes"] == 1 and "CPUs, torch" in provenance["machine"]


def test_state_from_other_code_is_not_resumed(micro_train_inputs, straight_run, tmp_path, capsys) -> None:
    cfg, run = micro_config(), tmp_path / "run"
    train_generator(cfg, micro_train_inputs["tasks"], _paths(micro_train_inputs, run), stop_after_step=20)
    newest = run / "checkpoints" / "step-000020.pt"
    state = torch.load(newest, weights_only=False)
    state["provenance"]["code"] = "another version of llgbm"
    state["model"] = {k: torch.zeros_like(v) for k, v in state["model"].items()}  # would show if reused
    torch.save(state, newest)
    train_generator(cfg, micro_train_inputs["tasks"], _paths(micro_train_inputs, run))
    assert "made by another run (code changed); training starts fresh" in capsys.readouterr().out
    _assert_same_generator(straight_run / "generator", run / "generator")


def test_unreadable_checkpoint_is_an_error_naming_it(micro_train_inputs, tmp_path) -> None:
    cfg, run = micro_config(), tmp_path / "run"
    train_generator(cfg, micro_train_inputs["tasks"], _paths(micro_train_inputs, run), stop_after_step=10)
    newest = run / "checkpoints" / "step-000010.pt"
    newest.write_bytes(newest.read_bytes()[:100])
    with pytest.raises(LlgbmError, match="unreadable training checkpoint") as info:
        train_generator(cfg, micro_train_inputs["tasks"], _paths(micro_train_inputs, run))
    assert str(newest) in str(info.value)


def test_truncated_delta_cache_entry_is_an_error_naming_it(micro_train_inputs, tmp_path) -> None:
    deltas = tmp_path / "deltas"
    shutil.copytree(micro_train_inputs["deltas"], deltas)
    # An entry training reads: a training task's checkpoint (the held-out task's are never read).
    entries = json.loads((deltas / "manifest.json").read_text())["entries"].values()
    entry = deltas / next(e["file"] for e in sorted(entries, key=lambda e: e["file"]) if e["task"] != "largest")
    entry.write_bytes(entry.read_bytes()[:30])
    paths = _paths({**micro_train_inputs, "deltas": deltas}, tmp_path / "run")
    with pytest.raises(LlgbmError, match="unreadable delta cache entry") as info:
        train_generator(micro_config(), micro_train_inputs["tasks"], paths)
    assert str(entry) in str(info.value)


def test_nan_stops_training_naming_the_step(micro_train_inputs, tmp_path, monkeypatch) -> None:
    import llgbm.recipes.train as train_module

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


def test_a_delta_variant_trains_against_its_own_cache(micro_train_inputs, tmp_path) -> None:
    from llgbm.recipes.deltas import fill_cache

    train = {**micro_config().train.__dict__, "steps": 12, "save_interval": 100, "lambda_warmup_steps": 2}
    cfg = micro_config(delta_reduce="per_probe", delta_layers="all", train=train)
    fill_cache(cfg, micro_train_inputs["tasks"], micro_training(cfg, micro_train_inputs["tasks"]),
               micro_train_inputs["base"], micro_train_inputs["teachers"], tmp_path / "deltas")
    metrics = train_generator(cfg, micro_train_inputs["tasks"],
                              _paths({**micro_train_inputs, "deltas": tmp_path / "deltas"}, tmp_path / "run"))
    assert math.isfinite(metrics["loss_behaviour"]) and metrics["loss_behaviour"] > 0
    with pytest.raises(LlgbmError, match=r"another definition \(the delta variant \(delta_reduce, delta_layers\) differs\)"):
        train_generator(micro_config(train=train), micro_train_inputs["tasks"],
                        _paths({**micro_train_inputs, "deltas": tmp_path / "deltas"}, tmp_path / "other"))


def _bench_world(cfg, dtype: torch.dtype = torch.float32):
    """A random base, teachers, prompts and records of the micro shapes (as `llgbm bench train` builds
    them), in dtype."""
    from llgbm.core.delta import DeltaComputer
    from llgbm.core.generator import LoraGenerator, generator_shape
    from llgbm.core.lora import layout_of_model, lora_scaling, stack_adapters
    from llgbm.core.weight_tokens import WeightTokenizer
    from llgbm.data.batching import GeneratorDataset
    from llgbm.testing import random_adapter, random_model, random_probes, random_records, tiny_shape

    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    base = random_model(tiny_shape(cfg.base.tiny)).to(dtype)
    layout = layout_of_model(base, cfg.lora)
    weight_tokenizer = WeightTokenizer(layout, cfg.generator.chunk_width)
    tokens, scales = weight_tokenizer.tokenize(stack_adapters([random_adapter(layout, generator) for _ in range(4)]))
    deltas = torch.randn(4, cfg.base.tiny.hidden_size, generator=generator, dtype=dtype)
    dataset = GeneratorDataset(tokens.to(dtype), scales.to(dtype), deltas,
                               [torch.arange(16)] * 4, torch.randn(16, 24, generator=generator, dtype=dtype),
                               cfg.generator.prompts_per_sample, [str(i) for i in range(4)],
                               records=random_records(32, 16, 8, generator), record_rows=[torch.arange(i, i + 8) for i in range(4)],
                               records_per_item=3)
    computer = DeltaComputer(base, layout, lora_scaling(cfg.lora), *random_probes(32, 3, 6, generator))
    model = LoraGenerator(generator_shape(cfg.generator, 24, weight_tokenizer.token_roles(), weight_tokenizer.token_columns(),
                          weight_tokenizer.token_dim)).to(dtype)
    return model, dataset, weight_tokenizer, computer


def _objective(cfg, computer, loss_fn):
    """The recipe's objective on the bench world: the behaviour term behaviour_loss names."""
    from llgbm.core.losses import DeltaLoss
    from llgbm.core.objective import DeltaTerm, TaskLossTerm
    from llgbm.recipes.train import Objective

    term = (TaskLossTerm(computer.model, computer.layout, computer.scaling) if cfg.behaviour_loss == "sft"
            else DeltaTerm(computer, DeltaLoss(cfg.delta_loss_type)))
    return Objective(loss_fn, term, cfg.train.behaviour_adapters)


def test_balance_none_gives_the_plain_sums_gradient_and_grad_norm_rescales_it() -> None:
    from llgbm.core.losses import MultiTaskLoss, weight_token_loss
    from llgbm.recipes.train import training_step

    cfg = micro_config()
    # float64: the delta is a stiff function of the tokens, so float32 rounding alone moves these
    # gradients by ~1e-3 of their size (1e-7 to 1e-5 in float64: parts of the base's attention stay
    # float32); a wrong coefficient or a missing term moves them by far more.
    model, dataset, weight_tokenizer, computer = _bench_world(cfg, torch.float64)
    mask, n = weight_tokenizer.mask, cfg.train.behaviour_adapters

    def grads(loss: torch.Tensor) -> list[torch.Tensor]:
        model.zero_grad()
        loss.backward()
        return [p.grad.clone() for p in model.parameters()]

    loss_fn = MultiTaskLoss(lambda_delta=0.7)
    streams = (torch.Generator().manual_seed(1), torch.Generator().manual_seed(2))
    metrics = training_step(model, dataset, weight_tokenizer, _objective(cfg, computer, loss_fn), cfg.train.batch_size,
                            streams, torch.device("cpu"), 1)
    surrogate = grads(metrics["_loss"])
    # The plain sum, written out: the same batch, L_weights + 0.7 * L_delta, one backward.
    batch = dataset.draw(cfg.train.batch_size, torch.Generator().manual_seed(1))
    tokens, scales = model(batch["condition"])
    tokens = tokens * mask
    delta = computer(weight_tokenizer.detokenize(tokens[:n], scales[:n].detach()))
    plain, _ = loss_fn(weight_token_loss(tokens, scales, batch["tokens"], batch["scales"], mask), delta, batch["delta"][:n])
    for a, b in zip(surrogate, grads(plain)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))
    assert metrics["behaviour_coefficient"] == 0.7 and metrics["grad_norm_behaviour"] > 0
    assert metrics["loss_total"] == pytest.approx(plain.item(), rel=1e-9)

    balanced_objective = _objective(cfg, computer, MultiTaskLoss(lambda_delta=0.7, balance="grad_norm"))
    streams = (torch.Generator().manual_seed(1), torch.Generator().manual_seed(2))
    balanced = training_step(model, dataset, weight_tokenizer, balanced_objective, cfg.train.batch_size, streams,
                             torch.device("cpu"), 1)
    assert balanced["behaviour_coefficient"] * balanced["grad_norm_behaviour"] == pytest.approx(
        0.7 * balanced["grad_norm_weights"], rel=1e-6)


def test_the_kl_reference_trains(micro_train_inputs, tmp_path) -> None:
    from llgbm.recipes.deltas import fill_cache

    train = {**micro_config().train.__dict__, "steps": 12, "save_interval": 100, "lambda_warmup_steps": 2}
    cfg = micro_config(behaviour_loss="kl", kl={"top_k": 4}, train=train)
    fill_cache(cfg, micro_train_inputs["tasks"], micro_training(cfg, micro_train_inputs["tasks"]),
               micro_train_inputs["base"], micro_train_inputs["teachers"], tmp_path / "deltas")
    run = tmp_path / "run"
    metrics = train_generator(cfg, micro_train_inputs["tasks"], _paths({**micro_train_inputs, "deltas": tmp_path / "deltas"}, run))
    assert metrics["loss_behaviour"] > 0 and math.isfinite(metrics["grad_norm_behaviour"])
    assert not (run / "live" / "plots" / "metrics" / "delta_cosine_sim.tsv").exists()  # no cosine of log-probs


@pytest.mark.parametrize("behaviour", ["delta", "sft"])
def test_the_scales_get_the_weight_terms_gradient_alone_and_behaviour_only_the_tokens_still_learn(behaviour) -> None:
    from llgbm.core.generator import start_at_mean
    from llgbm.core.losses import MultiTaskLoss, weight_token_loss
    from llgbm.recipes.train import training_step

    def gradients(lambda_weights: float) -> tuple[torch.Tensor, torch.Tensor, float]:
        cfg = micro_config(behaviour_loss=behaviour, train={**micro_config().train.__dict__, "lambda_weights": lambda_weights})
        model, dataset, weight_tokenizer, computer = _bench_world(cfg)
        start_at_mean(model, dataset.tokens, dataset.scales)
        loss_fn = MultiTaskLoss(lambda_delta=1.0, lambda_weights=lambda_weights)
        streams = (torch.Generator().manual_seed(1), torch.Generator().manual_seed(2))
        metrics = training_step(model, dataset, weight_tokenizer, _objective(cfg, computer, loss_fn), cfg.train.batch_size,
                                streams, torch.device("cpu"), 1)
        metrics["_loss"].backward()
        d = weight_tokenizer.token_dim
        return model.token_offset.grad[:, :d], model.token_offset.grad[:, d:], metrics["grad_norm_behaviour"]

    tokens, scales, norm = gradients(0.0)
    assert norm > 0 and tokens.abs().sum() > 0  # behaviour-only: the tokens learn
    assert (scales == 0).all()  # and the scales stay at the teachers' mean
    _, with_weights, _ = gradients(1.0)
    cfg = micro_config(behaviour_loss=behaviour)
    model, dataset, weight_tokenizer, computer = _bench_world(cfg)
    start_at_mean(model, dataset.tokens, dataset.scales)
    batch = dataset.draw(cfg.train.batch_size, torch.Generator().manual_seed(1))
    pred_tokens, pred_scales = model(batch["condition"])
    weight_token_loss(pred_tokens * weight_tokenizer.mask, pred_scales, batch["tokens"], batch["scales"],
                      weight_tokenizer.mask).backward()
    torch.testing.assert_close(with_weights, model.token_offset.grad[:, weight_tokenizer.token_dim:])


@pytest.mark.parametrize("behaviour", ["delta", "sft"])
def test_behaviour_only_runs_finish_with_their_weights_bounded(micro_train_inputs, tmp_path, behaviour) -> None:
    # The bound: with generator.max_scale_factor F the generated weights stay within about 2F of the
    # teachers' norm (before it, delta-only reached 333 to 1.9e5 times their norm on the embedded default).
    train = {**micro_config().train.__dict__, "steps": 60, "save_interval": 100, "lambda_weights": 0.0,
             "behaviour_adapters": 4}
    generator = {**micro_config().generator.__dict__, "max_scale_factor": 2.0}
    cfg = micro_config(behaviour_loss=behaviour, loss_balance="none", train=train, generator=generator)
    metrics = train_generator(cfg, micro_train_inputs["tasks"], _paths(micro_train_inputs, tmp_path / "run"))
    assert math.isfinite(metrics["loss_behaviour"]) and metrics["grad_norm_behaviour"] > 0
    assert 0.1 < max(_curve(tmp_path / "run", "weight_norm_ratio")) < 2 * 2.0
    summary = json.loads((tmp_path / "run" / "live" / "metrics.json").read_text())
    assert summary["generator_parameters"] > 0 and math.isfinite(summary["loss_weights_tail_change"])


def test_validation_tasks_are_kept_out_of_training_and_measured_along_it(micro_train_inputs, tmp_path) -> None:
    from llgbm.recipes.deltas import fill_cache
    from llgbm.recipes.evaluate import run_evaluation

    from .conftest import micro_split

    train = {**micro_config().train.__dict__, "steps": 12, "save_interval": 100, "validation_interval": 5}
    cfg = micro_config(validation_tasks=1, train=train)
    tasks = micro_train_inputs["tasks"]
    split = micro_split(cfg, tasks)
    assert len(split.validation) == 1 and split.validation[0] not in split.training + split.heldout
    split.save(tmp_path / "split.json")
    fill_cache(cfg, tasks, split.training_tasks(tasks), micro_train_inputs["base"], micro_train_inputs["teachers"],
               tmp_path / "deltas")
    inputs = {**micro_train_inputs, "split": tmp_path / "split.json", "deltas": tmp_path / "deltas"}
    metrics = train_generator(cfg, tasks, _paths(inputs, tmp_path / "run"))
    assert 0.0 <= metrics["validation_accuracy"] <= 1.0
    with open(tmp_path / "run" / "live" / "plots" / "metrics" / "validation_accuracy.tsv") as handle:
        assert [int(row["step"]) for row in csv.DictReader(handle, delimiter="\t")] == [5, 10, 12]
    generator, meta = load_generator(tmp_path / "run" / "generator")
    assert meta["validation_tasks"] == list(split.validation) and split.validation[0] not in meta["training_tasks"]
    paths = _paths(inputs, tmp_path / "run")
    summary, per_task = run_evaluation(cfg, tasks, paths, tmp_path / "adapters", prompt_batches=1)
    assert per_task[split.validation[0]]["group"] == "validation" and not per_task[split.validation[0]]["heldout"]
    assert summary["validation"]["tasks"] == 1 and summary["seen"]["tasks"] == len(split.training)
    # The curve's last point is the evaluate stage's first prompt batch: the same adapter, the same accuracy.
    assert metrics["validation_accuracy"] == pytest.approx(per_task[split.validation[0]]["generated"]["accuracy"])
