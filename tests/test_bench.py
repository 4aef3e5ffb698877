"""The benchmark commands run and report what they claim (timings themselves are never asserted)."""
from llgbm.bench import bench_delta, bench_train

from .conftest import micro_config


def test_bench_delta_reports_every_case() -> None:
    result = bench_delta(micro_config(), ["embedded-default"], [1, 2], repeats=1, probes=2, probe_length=6,
                         device="cpu", dtype="float32")
    assert [(c["adapters"], c["mode"]) for c in result["cases"]] == [
        (1, "forward"), (1, "forward_backward"), (2, "forward"), (2, "forward_backward")]
    for case in result["cases"]:
        assert all(case[k] > 0 for k in ("batched", "loop", "plain"))
        assert (case["peft"] is None) == (case["mode"] == "forward_backward")
    assert result["deltas_stage"]["stage"] > 0 and result["deltas_stage"]["peft"] > 0


def test_bench_train_reports_every_objective() -> None:
    result = bench_train(micro_config(), steps=3)
    arms = ("weight_only", "delta", "delta_per_probe", "delta_all_layers", "delta_grad_norm", "kl")
    assert set(result["seconds_per_step"]) == set(arms) and all(v > 0 for v in result["seconds_per_step"].values())
    for arm in arms[1:]:
        assert result["over_weight_only"][arm] == result["seconds_per_step"][arm] / result["seconds_per_step"]["weight_only"]


def test_bench_teachers_reports_both_paths() -> None:
    from llgbm.bench import bench_teachers

    result = bench_teachers(micro_config(), task_count=2, steps=3)
    assert result["tasks"] == 2 and result["steps"] == 3
    assert result["together_seconds"] > 0 and result["one_after_another_seconds"] > 0
    assert result["together_over_one_after_another"] == result["together_seconds"] / result["one_after_another_seconds"]
