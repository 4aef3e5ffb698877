"""The benches: the timing helper against a fake clock, every bench's figures against paths of known cost
(timed through the real helper, their work not run), FLOP counts by hand, and each bench's paths run for
real once (those that train a model as integration tests). Real timings are never asserted."""
from __future__ import annotations

import pytest
import torch

from llgbm.bench import delta as bench_delta_module
from llgbm.bench import evaluate as bench_evaluate_module
from llgbm.bench import teachers as bench_teachers_module
from llgbm.bench import timing
from llgbm.bench import train as bench_train_module
from llgbm.bench.delta import bench_delta, largest_fitting_adapters, largest_passing, linear_flops, matmul_peak_tflops
from llgbm.bench.timing import interleaved
from llgbm.testing import random_model, tiny_shape

from .conftest import micro_config

TRAIN_ARMS = ("weight_only", "delta", "delta_per_probe", "delta_all_layers", "delta_grad_norm", "kl", "sft", "sft_every_item",
              "sft_only")


class FakeWork:
    """A clock that moves only when a path "runs": path `name` costs `costs[name]` seconds, or the next of a
    list of costs; every call is logged."""

    def __init__(self, costs: dict[str, float | list[float]]):
        self.costs, self.now, self.calls = costs, 0.0, []

    def clock(self) -> float:
        return self.now

    def path(self, name: str):
        def run() -> None:
            cost = self.costs[name]
            self.now += cost.pop(0) if isinstance(cost, list) else cost
            self.calls.append(name)
        return run


def _costed(monkeypatch: pytest.MonkeyPatch, module, costs: dict[str, float]) -> FakeWork:
    """Make `module` time its paths through the real helper on a FakeWork clock, each path costing
    costs[name] (a name not in costs fails the test: a path the bench should not have) and doing nothing."""
    work = FakeWork(costs)

    def fake(paths, repeats, warmup=1, device=None):
        return interleaved({name: work.path(name) for name in paths}, repeats, warmup, clock=work.clock)

    monkeypatch.setattr(module, "interleaved", fake)
    return work


# --- the timing helper ------------------------------------------------------------------------------

def test_interleaved_warms_each_path_up_then_alternates_and_takes_the_median_of_the_timed_calls() -> None:
    # The warm-ups cost far more (a cold allocator); a median over them, or over the wrong path's calls, differs.
    work = FakeWork({"a": [100.0, 1.0, 9.0, 2.0], "b": [50.0, 4.0, 4.0, 7.0]})
    timed = interleaved({"a": work.path("a"), "b": work.path("b")}, repeats=3, clock=work.clock)
    assert work.calls == ["a", "b"] * 4  # one warm-up each, then A B A B A B
    assert timed["a"].samples == (1.0, 9.0, 2.0) and timed["a"].seconds == 2.0
    assert timed["b"].samples == (4.0, 4.0, 7.0) and timed["b"].seconds == 4.0
    assert timed["a"].peak_gib is None and timed["b"].peak_gib is None  # no CUDA


@pytest.mark.parametrize("warmup", [0, 2])
def test_interleaved_discards_exactly_the_warm_up_rounds(warmup: int) -> None:
    costs = [10.0 * (i + 1) for i in range(warmup)] + [3.0, 1.0, 2.0, 8.0]
    work = FakeWork({"a": list(costs), "b": [0.5] * len(costs)})
    timed = interleaved({"a": work.path("a"), "b": work.path("b")}, repeats=4, warmup=warmup, clock=work.clock)
    assert work.calls == ["a", "b"] * (warmup + 4)
    assert timed["a"].samples == (3.0, 1.0, 2.0, 8.0) and timed["a"].seconds == 2.5  # the median of four
    assert timed["b"].seconds == 0.5


def test_interleaved_synchronises_before_and_after_every_timed_call() -> None:
    events: list[str] = []
    ticks = iter(range(100))

    def clock() -> float:
        events.append("clock")
        return float(next(ticks))

    interleaved({"a": lambda: events.append("a"), "b": lambda: events.append("b")}, repeats=2, warmup=1, clock=clock,
                synchronize=lambda: events.append("sync"))
    warm_up = ["sync", "a", "sync", "sync", "b", "sync"]  # synchronised, not timed
    timed = [e for name in ("a", "b") for e in ("sync", "clock", name, "sync", "clock")]
    assert events == warm_up + timed * 2


def test_interleaved_needs_a_timed_round() -> None:
    with pytest.raises(ValueError):
        interleaved({"a": lambda: None}, repeats=0)


# --- FLOP counts and figures from a known time ------------------------------------------------------

def _decoder_linear_parameters(cfg) -> int:
    t = cfg.base.tiny
    head = t.hidden_size // t.num_heads
    per_layer = (t.hidden_size * t.hidden_size * 2 + t.hidden_size * head * t.num_kv_heads * 2
                 + 3 * t.hidden_size * t.intermediate_size)  # q, o; k, v; gate, up, down
    return per_layer * t.num_layers


def test_linear_flops_counts_the_decoder_linears() -> None:
    cfg = micro_config()
    model = random_model(tiny_shape(cfg.base.tiny))
    assert linear_flops(model, 10, backward=False) == 2.0 * _decoder_linear_parameters(cfg) * 10
    assert linear_flops(model, 10, backward=True) == 2 * linear_flops(model, 10, backward=False)


def test_the_matmul_ceiling_is_its_flops_over_the_measured_time(monkeypatch: pytest.MonkeyPatch) -> None:
    readings = iter(0.125 * i for i in range(100))  # every reading a tick later: each timed call takes 0.125 s
    monkeypatch.setattr(timing, "CLOCK", lambda: next(readings))
    assert matmul_peak_tflops(torch.device("cpu"), torch.float32, 64, repeats=3) == pytest.approx(2 * 64**3 / 0.125 / 1e12)


# Powers of two and their sums: the fake clock's differences are exact.
DELTA_COSTS = {"batched": 0.5, "batched_unfused": 1.5, "loop": 2.0, "plain": 0.25, "plain_bf16_weights": 0.125,
               "peft": 8.0, "matmul": 2.0**-10, "stage": 2.0}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_bench_delta_reports_each_paths_time_and_the_batched_tflops_of_the_real_tokens(monkeypatch, dtype) -> None:
    cfg = micro_config()
    work = _costed(monkeypatch, bench_delta_module, DELTA_COSTS)
    result = bench_delta(cfg, ["embedded-default"], [1, 2], repeats=3, probes=2, probe_length=6, device="cpu", dtype=dtype,
                         with_peft=True, stage_adapters=2)
    assert [(c["adapters"], c["mode"], c["gradient_checkpointing"]) for c in result["cases"]] == [
        (n, mode, checkpointing) for n in (1, 2)
        for mode, checkpointing in (("forward", False), ("forward_backward", False), ("forward_backward", True))]
    bf16 = dtype == "bfloat16"
    for case in result["cases"]:
        forward = case["mode"] == "forward"
        assert (case["batched"], case["batched_unfused"], case["loop"], case["plain"]) == (0.5, 1.5, 2.0, 0.25)
        assert case["peft"] == (8.0 if forward else None)
        assert case["plain_bf16_weights"] == (0.125 if bf16 else None)
        assert case["batched_over_plain_bf16_weights"] == (4.0 if bf16 else None)
        assert (case["batched_over_plain"], case["loop_over_batched"], case["unfused_over_batched"]) == (2.0, 4.0, 3.0)
        # Probes of 6 and 4 real tokens (right-padded to 6): 10 tokens per adapter, padding not counted.
        flops = 2.0 * _decoder_linear_parameters(cfg) * 10 * case["adapters"] * (1 if forward else 2)
        assert case["batched_tflops"] == pytest.approx(flops / 0.5 / 1e12)
        assert case["peak_gib_batched"] is None  # no GPU
    assert result["matmul_peak_tflops"] == pytest.approx(2 * 1024**3 / 2.0**-10 / 1e12)
    assert result["matmul_peak_dtype"] == ("bfloat16" if bf16 else "float32")
    stage = result["deltas_stage"]
    assert (stage["stage"], stage["peft"], stage["peft_over_stage"], stage["adapters"]) == (2.0, 8.0, 4.0, 2)
    # Every comparison interleaved after one warm-up: 3 modes x 2 adapter counts, the matmul, the stage.
    per_mode = ["batched", "batched_unfused", "loop", "plain"] + (["plain_bf16_weights"] if bf16 else [])
    assert work.calls[: 4 * (len(per_mode) + 1)] == (per_mode + ["peft"]) * 4
    assert len(work.calls) == 4 * (len(per_mode) * 6 + 2) + 4 * 1 + 4 * 2
    assert result["largest_fitting_adapters"] is None  # not asked for


def test_bench_delta_can_leave_out_the_peft_column(monkeypatch) -> None:
    work = _costed(monkeypatch, bench_delta_module, DELTA_COSTS)
    result = bench_delta(micro_config(), ["embedded-default"], [1], repeats=1, probes=2, probe_length=6, device="cpu",
                         dtype="float32", with_peft=False, stage_adapters=1)
    assert all(case["peft"] is None for case in result["cases"])
    assert "peft" not in work.calls[: work.calls.index("matmul")]  # the deltas stage's comparison keeps its own


def test_the_fit_search_is_gpu_only_and_says_so(monkeypatch) -> None:
    cfg = micro_config()
    _costed(monkeypatch, bench_delta_module, DELTA_COSTS)
    result = bench_delta(cfg, ["embedded-default"], [1], repeats=1, probes=2, probe_length=6, device="cpu",
                         dtype="float32", fit_limit=4, stage_adapters=1)
    assert result["largest_fitting_adapters"] == {"embedded-default": {"without_checkpointing": None,
                                                                       "with_checkpointing": None}}
    assert largest_fitting_adapters(random_model(tiny_shape(cfg.base.tiny)), cfg.lora, 2, 6, torch.device("cpu"), None,
                                    False, 4) is None


def test_largest_passing_finds_the_wall_within_an_eighth() -> None:
    for wall in (0, 1, 2, 3, 7, 64, 100, 200):
        tried: list[int] = []
        found, reached = largest_passing(lambda n: tried.append(n) or n <= wall, limit=256)
        assert not reached and found <= wall
        assert min((n for n in tried if n > wall), default=None) - found <= max(1, found // 8)  # a failing try is that close
        assert len(tried) == len(set(tried))  # no size tried twice
    assert largest_passing(lambda n: True, limit=100) == (64, True)


# --- bench train, teachers, evaluate: figures from paths of known cost ------------------------------

def test_bench_train_steps_every_objective_in_turn_and_divides_by_weight_only(monkeypatch) -> None:
    costs = {arm: (i + 1) / 8 for i, arm in enumerate(TRAIN_ARMS)}  # eighths: the fake clock's sums are exact
    work = _costed(monkeypatch, bench_train_module, costs)
    result = bench_train_module.bench_train(micro_config(), steps=3)
    assert work.calls == list(TRAIN_ARMS) * (bench_train_module.WARMUP_STEPS + 3)  # step by step, warm-ups first
    assert result["seconds_per_step"] == costs
    assert result["over_weight_only"] == pytest.approx({arm: i + 1.0 for i, arm in enumerate(TRAIN_ARMS) if i})
    assert result["behaviour_adapters"] == 2 and "delta_batch_size" not in result and result["warmup_steps"] == 5


def test_each_train_arm_changes_one_knob_and_never_warms_its_lambda_up() -> None:
    from llgbm.assembly.objective import objective

    cfg = micro_config()
    arms = bench_train_module.arm_configs(cfg)
    assert tuple(arms) == TRAIN_ARMS
    assert arms["weight_only"].train.behaviour_adapters == 0 and arms["weight_only"].lambda_delta == 0
    assert arms["sft_every_item"].train.behaviour_adapters == cfg.train.batch_size
    knobs = {name: (a.behaviour_loss, a.delta_reduce, a.delta_layers, a.loss_balance, a.train.behaviour_adapters)
             for name, a in arms.items() if name != "weight_only"}
    n = cfg.train.behaviour_adapters
    assert knobs == {"delta": ("delta", "mean", "last", "none", n), "delta_per_probe": ("delta", "per_probe", "last", "none", n),
                     "delta_all_layers": ("delta", "mean", "all", "none", n),
                     "delta_grad_norm": ("delta", "mean", "last", "grad_norm", n), "kl": ("kl", "mean", "last", "none", n),
                     "sft": ("sft", "mean", "last", "none", n),
                     "sft_every_item": ("sft", "mean", "last", "none", cfg.train.batch_size),
                     "sft_only": ("sft", "mean", "last", "none", cfg.train.batch_size)}
    for name, arm in arms.items():  # lambda at its value from the first step: a step at 0 skips the backward
        assert objective(arm).get_lambda() == (0.0 if name == "weight_only" else max(cfg.lambda_delta, 1.0))
        assert arm.train.mixed_precision == "no"
        # The weight term in every arm but SFT-only, whatever params' default objective sets.
        assert objective(arm).get_lambda_weights() == (0.0 if name == "sft_only" else 1.0), name


def test_bench_teachers_times_both_recipe_paths_interleaved(monkeypatch) -> None:
    work = _costed(monkeypatch, bench_teachers_module, {"together": 3.0, "one_after_another": 12.0})
    result = bench_teachers_module.bench_teachers(micro_config(), task_count=2, steps=3, repeats=2)
    assert work.calls == ["together", "one_after_another"] * 3
    assert (result["together_seconds"], result["one_after_another_seconds"]) == (3.0, 12.0)
    assert result["together_over_one_after_another"] == 0.25 and result["tasks"] == 2 and result["steps"] == 3


def test_bench_evaluate_times_both_meter_paths_interleaved(monkeypatch) -> None:
    work = _costed(monkeypatch, bench_evaluate_module, {"batched": 0.5, "peft": 3.0})
    result = bench_evaluate_module.bench_evaluate(micro_config(), n_adapters=2, repeats=2)
    assert work.calls == ["batched", "peft"] * 3
    assert (result["batched"], result["peft"], result["peft_over_batched"]) == (0.5, 3.0, 6.0)


# --- the paths themselves, run for real ---------------------------------------------------------------

def test_bench_delta_runs_every_path() -> None:
    result = bench_delta(micro_config(), ["embedded-default"], [2], repeats=1, probes=2, probe_length=6,
                         device="cpu", dtype="bfloat16", stage_adapters=2)
    for case in result["cases"]:
        assert all(case[k] > 0 for k in ("batched", "batched_unfused", "loop", "plain", "plain_bf16_weights"))
        assert (case["peft"] is None) == (case["mode"] == "forward_backward")
    assert result["deltas_stage"]["stage"] > 0 and result["deltas_stage"]["peft"] > 0


def test_bench_evaluate_runs_both_paths() -> None:
    result = bench_evaluate_module.bench_evaluate(micro_config(), n_adapters=2, repeats=1)
    assert result["batched"] > 0 and result["peft"] > 0


@pytest.mark.integration
def test_bench_train_runs_every_objective() -> None:
    result = bench_train_module.bench_train(micro_config(), steps=1)
    assert set(result["seconds_per_step"]) == set(TRAIN_ARMS) and all(v > 0 for v in result["seconds_per_step"].values())


@pytest.mark.integration
def test_bench_teachers_runs_both_paths() -> None:
    result = bench_teachers_module.bench_teachers(micro_config(), task_count=2, steps=3)
    assert result["together_seconds"] > 0 and result["one_after_another_seconds"] > 0
