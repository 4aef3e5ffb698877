"""The benchmark commands run and report what they claim (timings themselves are never asserted)."""
import torch

from llgbm.bench import bench_delta, bench_train

from .conftest import micro_config


def test_bench_delta_reports_every_case() -> None:
    result = bench_delta(micro_config(), ["embedded-default"], [1, 2], repeats=1, probes=2, probe_length=6,
                         device="cpu", dtype="float32")
    assert [(c["adapters"], c["mode"], c["gradient_checkpointing"]) for c in result["cases"]] == [
        (n, mode, checkpointing) for n in (1, 2)
        for mode, checkpointing in (("forward", False), ("forward_backward", False), ("forward_backward", True))]
    for case in result["cases"]:
        assert all(case[k] > 0 for k in ("batched", "batched_unfused", "loop", "plain", "batched_tflops"))
        assert case["unfused_over_batched"] == case["batched_unfused"] / case["batched"]
        assert (case["peft"] is None) == (case["mode"] == "forward_backward")
        assert case["plain_bf16_weights"] is None and case["peak_gib_batched"] is None  # fp32 run, no GPU
        assert case["batched_over_plain"] == case["batched"] / case["plain"]
    assert result["matmul_peak_tflops"] > 0 and result["matmul_peak_dtype"] == "float32"
    assert result["deltas_stage"]["stage"] > 0 and result["deltas_stage"]["peft"] > 0
    assert result["largest_fitting_adapters"] is None  # not asked for


def test_the_fit_search_is_gpu_only_and_says_so() -> None:
    from llgbm.bench import largest_fitting_adapters, random_model, tiny_shape

    cfg = micro_config()
    result = bench_delta(cfg, ["embedded-default"], [1], repeats=1, probes=2, probe_length=6, device="cpu",
                         dtype="float32", fit_limit=4)
    assert result["largest_fitting_adapters"] == {"embedded-default": {"without_checkpointing": None,
                                                                       "with_checkpointing": None}}
    assert largest_fitting_adapters(random_model(tiny_shape(cfg)), cfg.lora, 2, 6, torch.device("cpu"), None,
                                    False, 4) is None


def test_bench_delta_can_leave_out_the_peft_column() -> None:
    result = bench_delta(micro_config(), ["embedded-default"], [1], repeats=1, probes=2, probe_length=6,
                         device="cpu", dtype="float32", with_peft=False)
    assert all(case["peft"] is None for case in result["cases"])


def test_bench_delta_in_bf16_has_a_bf16_weights_floor() -> None:
    result = bench_delta(micro_config(), ["embedded-default"], [2], repeats=1, probes=2, probe_length=6,
                         device="cpu", dtype="bfloat16")
    for case in result["cases"]:
        assert case["plain_bf16_weights"] > 0
        assert case["batched_over_plain_bf16_weights"] == case["batched"] / case["plain_bf16_weights"]
    assert result["matmul_peak_dtype"] == "bfloat16"


def test_linear_flops_counts_the_decoder_linears() -> None:
    from llgbm.bench import linear_flops, random_model, tiny_shape

    cfg = micro_config()
    model = random_model(tiny_shape(cfg))
    t = cfg.base.tiny
    head = t.hidden_size // t.num_heads
    per_layer = (t.hidden_size * t.hidden_size * 2 + t.hidden_size * head * t.num_kv_heads * 2
                 + 3 * t.hidden_size * t.intermediate_size)  # q, o; k, v; gate, up, down
    assert linear_flops(model, 10, backward=False) == 2.0 * per_layer * t.num_layers * 10
    assert linear_flops(model, 10, backward=True) == 2 * linear_flops(model, 10, backward=False)


def test_bench_train_reports_every_objective() -> None:
    result = bench_train(micro_config(), steps=3)
    arms = ("weight_only", "delta", "delta_per_probe", "delta_all_layers", "delta_grad_norm", "kl", "sft", "sft_every_item")
    assert set(result["seconds_per_step"]) == set(arms) and all(v > 0 for v in result["seconds_per_step"].values())
    for arm in arms[1:]:
        assert result["over_weight_only"][arm] == result["seconds_per_step"][arm] / result["seconds_per_step"]["weight_only"]


def test_bench_teachers_reports_both_paths() -> None:
    from llgbm.bench import bench_teachers

    result = bench_teachers(micro_config(), task_count=2, steps=3)
    assert result["tasks"] == 2 and result["steps"] == 3
    assert result["together_seconds"] > 0 and result["one_after_another_seconds"] > 0
    assert result["together_over_one_after_another"] == result["together_seconds"] / result["one_after_another_seconds"]


def test_largest_passing_finds_the_wall_within_an_eighth() -> None:
    from llgbm.bench import largest_passing

    for wall in (0, 1, 2, 3, 7, 64, 100, 200):
        tried: list[int] = []
        found, reached = largest_passing(lambda n: tried.append(n) or n <= wall, limit=256)
        assert not reached and found <= wall
        assert min((n for n in tried if n > wall), default=None) - found <= max(1, found // 8)  # a failing try is that close
        assert len(tried) == len(set(tried))  # no size tried twice
    assert largest_passing(lambda n: True, limit=100) == (64, True)


def test_bench_evaluate_reports_both_paths() -> None:
    from llgbm.bench import bench_evaluate

    result = bench_evaluate(micro_config(), n_adapters=2, repeats=1)
    assert result["batched"] > 0 and result["peft"] > 0
    assert result["peft_over_batched"] == result["peft"] / result["batched"]
