import subprocess
import sys

import pytest
import torch

from llgbm.artifacts.base_model import load_base, load_tokenizer
from llgbm.artifacts.delta_cache import DeltaCache
from llgbm.artifacts.generator_files import open_generator
from llgbm.core.delta import DeltaComputer
from llgbm.core.lora import lora_scaling, stack_adapters
from llgbm.data.probes import answer_prompts, apply_template, tokenize_probes
from llgbm.infra.errors import LlgbmError
from llgbm.recipes.evaluate import (
    METHODS,
    cosine_or_none,
    cosine_stats,
    delta_alignment,
    evaluation_probe_set,
    gain_share,
    run_evaluation,
    summarise_methods,
)
from llgbm.recipes.generate import generate_from_file, read_prompts
from llgbm.testing import peft_delta


def test_alignment_on_a_hand_made_case() -> None:
    target = torch.tensor([2.0, 0.0])
    stats = delta_alignment([torch.tensor([1.0, 0.0]), torch.tensor([0.0, 3.0])], target, "eval")
    assert stats["delta_cosine_eval"] == pytest.approx(0.5) and stats["delta_cosine_eval_std"] == pytest.approx(0.5)
    assert (stats["delta_cosine_eval_min"], stats["delta_cosine_eval_max"]) == (0.0, 1.0)
    assert stats["delta_mse_eval"] == pytest.approx(((1.0 + 0.0) / 2 + (4.0 + 9.0) / 2) / 2)
    assert stats["delta_norm_ratio_eval"] == pytest.approx((1.0 + 3.0) / 2 / 2.0)
    assert delta_alignment([torch.zeros(2)], target, "eval")["delta_cosine_eval"] is None  # the base has no direction
    assert delta_alignment([target], torch.zeros(2), "x")["delta_norm_ratio_x"] is None


def test_gain_share_is_floored_at_base_or_chance() -> None:
    assert gain_share(0.5, 0.1, 0.9, chance=0.1) == pytest.approx(0.5)
    assert gain_share(0.5, 0.3, 0.9, chance=0.1) == pytest.approx(0.2 / 0.6)  # base above chance: the floor
    # A base below chance is noise: the floor is chance, so a chance-level adapter gains nothing (the
    # unfloored share would be (0.2 - 0.05) / (0.85 - 0.05) = 0.1875).
    assert gain_share(0.2, 0.05, 0.85, chance=0.2) == 0.0
    assert gain_share(0.1, 0.05, 0.85, chance=0.2) == pytest.approx(-0.1 / 0.65)
    assert gain_share(0.5, 0.05, 0.2, chance=0.2) is None  # the teacher at the floor: nothing to share
    assert gain_share(0.5, 0.3, 0.25, chance=0.2) is None  # the teacher below the base
    assert gain_share(0.5, 0.1, 0.1, chance=0.1) is None


def test_centred_cosine_on_a_hand_made_case() -> None:
    # Two deltas made of the training teachers' mean plus a part of their own: raw, both point along the
    # mean and look aligned with the teacher; centred, only the one sharing the teacher's own part does.
    mean = torch.tensor([1.0, 1.0, 0.0, 0.0])
    teacher = mean + torch.tensor([0.0, 0.0, 1.0, 0.0])
    same, orthogonal = mean + torch.tensor([0.0, 0.0, 2.0, 0.0]), mean + torch.tensor([0.0, 0.0, 0.0, 3.0])
    raw = cosine_stats([same, orthogonal], teacher, "c")
    assert raw["c_min"] == pytest.approx(2 / (11 ** 0.5 * 3 ** 0.5)) and raw["c_max"] == pytest.approx(4 / (6 ** 0.5 * 3 ** 0.5))
    centred = cosine_stats([same, orthogonal], teacher, "c", centre=mean)
    assert (centred["c_min"], centred["c_max"], centred["c"]) == (0.0, pytest.approx(1.0), pytest.approx(0.5))
    assert cosine_stats([mean], teacher, "c", centre=mean)["c"] is None  # the mean itself: no own direction
    assert cosine_or_none(torch.zeros(3), torch.ones(3)) is None


def test_summary_counts_the_tasks_where_a_value_is_defined() -> None:
    def row(accuracy: float, share: float | None, cosine: float | None) -> dict:
        return {m: {"accuracy": accuracy, "gain_share": share, "delta_cosine_eval": cosine,
                    "delta_cosine_eval_centred": cosine, "delta_cosine_train_probes": cosine, "delta_mse_eval": 0.5,
                    "delta_norm_ratio_eval": 1.0} for m in METHODS}

    per_task = {"a": row(0.2, None, 0.5), "b": row(0.4, 0.3, None), "c": row(0.6, None, None), "d": row(1.0, 1.0, 1.0)}
    for name, task_row in per_task.items():
        task_row["chance"] = 0.3
    summary = summarise_methods(per_task, ["a", "b", "c"], {"a": ("s", "t"), "b": ("s", "u"), "c": ("r", "u")})
    assert summary["tasks"] == 3
    assert summary["below_chance"]["generated"] == 1  # a: 0.2 < 0.3
    assert summary["by_factor"] == {"selector": {"r": 0.6, "s": pytest.approx(0.3)},
                                    "transform": {"t": 0.2, "u": pytest.approx(0.5)}}
    assert "by_factor" not in summarise_methods(per_task, ["a"])  # tasks without parts
    assert summary["accuracy"]["generated"] == pytest.approx(0.4)
    assert summary["gain_share"]["generated"] == pytest.approx(0.3)  # the mean of the one defined value
    assert summary["defined"]["gain_share"]["generated"] == 1
    assert summary["defined"]["delta_cosine_eval_centred"]["base"] == 1
    assert summary["defined"]["delta_norm_ratio_eval"]["teacher"] == 3
    assert "accuracy" not in summary["defined"]
    empty = summarise_methods(per_task, [])
    assert empty["tasks"] == 0 and empty["gain_share"]["generated"] is None and empty["defined"]["gain_share"]["generated"] == 0


def test_generated_adapter_through_peft_matches_the_functional_delta(micro_generator, tmp_path) -> None:
    loaded = open_generator(micro_generator["generator"], micro_generator["base"])
    condition = torch.randn(loaded.prompts, 384, generator=torch.Generator().manual_seed(0))
    tensors = loaded.tensors(condition)
    loaded.save(tensors, tmp_path / "adapter")
    cache = DeltaCache.load(micro_generator["deltas"])
    ids, mask = tokenize_probes(cache.probes, load_tokenizer(micro_generator["base"]))
    computer = DeltaComputer(load_base(micro_generator["base"]), loaded.layout, lora_scaling(loaded.lora), ids, mask)
    with torch.no_grad():
        functional = computer(stack_adapters([tensors]))[0]
    through_peft = peft_delta(micro_generator["base"], tmp_path / "adapter", ids, mask)
    assert functional.norm() > 0
    assert (through_peft - functional).norm() <= 1e-5 * functional.norm()


def test_evaluation_on_the_micro_configuration(micro_generator, tmp_path) -> None:
    summary, per_task = run_evaluation(micro_generator["cfg"], micro_generator["tasks"], micro_generator["paths"],
                                       tmp_path / "adapters", prompt_batches=2)
    assert set(per_task) == {"first", "last", "largest"}
    assert per_task["largest"]["heldout"] and not per_task["first"]["heldout"]
    for name, row in per_task.items():
        for method in METHODS:
            assert 0.0 <= row[method]["accuracy"] <= 1.0
        for where in ("train_probes", "eval", "eval_centred"):
            assert row["teacher"][f"delta_cosine_{where}"] == pytest.approx(1.0)
        assert row["base"]["delta_cosine_train_probes"] is None and row["base"]["delta_norm_ratio_train_probes"] == 0.0
        assert row["base"]["delta_cosine_eval"] is None and row["base"]["delta_norm_ratio_eval"] == 0.0
        # The evaluation probes are other texts: the generated adapters' deltas there differ.
        assert row["generated"]["delta_mse_eval"] != row["generated"]["delta_mse_train_probes"]
        assert len(row["nearest_tasks"]) == 2 and "largest" not in row["nearest_tasks"]  # only training tasks
    assert summary["heldout"]["accuracy"]["teacher"] == per_task["largest"]["teacher"]["accuracy"]
    assert (summary["train_tasks"], summary["heldout"]["tasks"], summary["seen"]["tasks"]) == (2, 1, 2)
    flat = {f"{split}.{metric}.{method}": value for split in ("heldout", "seen")
            for metric, by_method in summary[split].items() if isinstance(by_method, dict)
            for method, value in by_method.items()}
    for path in ("heldout.accuracy.generated", "heldout.gain_share.generated", "heldout.delta_cosine_eval.generated",
                 "heldout.delta_cosine_eval_centred.generated", "seen.accuracy.generated"):
        assert path in flat
    defined = summary["heldout"]["defined"]["gain_share"]["generated"]
    assert defined == (per_task["largest"]["generated"]["gain_share"] is not None)
    assert summary["seen"]["defined"]["delta_cosine_eval"]["base"] == 0  # the base's zero delta, counted
    assert (tmp_path / "adapters" / "largest" / "generated-1" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "adapters" / "factor_mean_teacher" / "adapter_config.json").is_file()


def test_evaluation_probes_never_appear_in_training(micro_generator) -> None:
    cfg, tasks = micro_generator["cfg"], micro_generator["tasks"]
    tokenizer = load_tokenizer(micro_generator["base"])
    cache = DeltaCache.load(micro_generator["deltas"])
    probes = evaluation_probe_set(cfg, tasks, cfg.heldout_tasks, cache, tokenizer)
    assert len(probes.texts) == cfg.evaluate.probe_count
    assert (probes.template, probes.max_length) == (cache.probes.template, cache.probes.max_length)
    test_prompts = {apply_template(r.prompt, probes.template, tokenizer): t.name for t in tasks for r in t.test}
    assert {test_prompts.get(text) for text in probes.texts} == {t.name for t in tasks}  # held-out one included
    assert not set(probes.texts) & set(cache.probes.texts)
    train_prompts = {apply_template(r.prompt, probes.template, tokenizer) for t in tasks for r in t.train}
    assert not set(probes.texts) & train_prompts
    answers = answer_prompts(tasks, cfg.kl.prompts, cfg.kl.top_k, cfg.kl.seed)
    assert not set(probes.texts) & {apply_template(p, probes.template, tokenizer)
                                    for prompts in answers.prompts.values() for p in prompts}


@pytest.mark.e2e  # a subprocess
def test_generate_command(micro_generator, tmp_path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(r.prompt for r in micro_generator["tasks"][0].test[:6]))
    timings = generate_from_file(micro_generator["generator"], prompts, tmp_path / "out")
    assert timings["prompts_used"] == 4 and timings["total_seconds"] > 0
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()
    result = subprocess.run([sys.executable, "-m", "llgbm.cli", "generate", "--generator", str(micro_generator["generator"]),
                             "--prompts", str(tmp_path / "absent.txt"), "--out", str(tmp_path / "x")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {tmp_path / 'absent.txt'}: prompt file not found"
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("content, fragment", [("", "prompt file has no prompts"), ("\n  \n", "prompt file has no prompts")])
def test_empty_prompt_file(tmp_path, content: str, fragment: str) -> None:
    path = tmp_path / "p.txt"
    path.write_text(content)
    with pytest.raises(LlgbmError, match=fragment):
        read_prompts(path)


def test_generator_for_another_base_is_refused(micro_generator, tmp_path) -> None:
    from llgbm.artifacts.base_model import BaseConfig, TinyModelConfig
    from llgbm.recipes.base import prepare_base

    other = tmp_path / "other-base"
    prepare_base(BaseConfig(tiny=TinyModelConfig(hidden_size=16, num_heads=2, num_kv_heads=1, intermediate_size=32),
                            pretrain_steps=0), ["a", "b"], [], other)
    with pytest.raises(LlgbmError, match="trained for another base model"):
        open_generator(micro_generator["generator"], other)


def _meter_and_adapters(micro_generator, tmp_path):
    from llgbm.core.delta import DeltaSpec
    from llgbm.recipes.evaluate import AdapterMeter

    cfg, tasks = micro_generator["cfg"], micro_generator["tasks"]
    loaded = open_generator(micro_generator["paths"].generator, micro_generator["base"])
    tokenizer = load_tokenizer(micro_generator["base"])
    cache = DeltaCache.load(micro_generator["deltas"])
    probes = {"train_probes": tokenize_probes(cache.probes, tokenizer),
              "eval": tokenize_probes(evaluation_probe_set(cfg, tasks, cfg.heldout_tasks, cache, tokenizer), tokenizer)}
    meter = AdapterMeter(micro_generator["base"], "float32", tokenizer, probes, DeltaSpec(), loaded.lora)
    dirs = []
    for k, task in enumerate(tasks):  # a generated adapter per task's prompts, and the teachers
        condition = torch.randn(loaded.prompts, 384, generator=torch.Generator().manual_seed(k))
        loaded.save(loaded.tensors(condition), tmp_path / f"generated-{k}")
        dirs.append(tmp_path / f"generated-{k}")
    from llgbm.artifacts.teacher_index import final_checkpoints

    dirs += list(final_checkpoints(micro_generator["teachers"]).values())
    return meter, [None, *dirs], tasks


def test_batched_evaluation_equals_peft_loading(micro_generator, tmp_path) -> None:
    """The oracle: every adapter measured in one batch gives the accuracy and deltas PEFT's own loading gives."""
    meter, dirs, tasks = _meter_and_adapters(micro_generator, tmp_path)
    for task in tasks:
        batched = meter.measure(dirs, task)
        for directory, measured in zip(dirs, batched):
            oracle = meter.peft_measure(directory, task)
            assert measured.accuracy == oracle.accuracy
            for where, delta in oracle.deltas.items():
                assert (measured.deltas[where] - delta).norm() <= 1e-5 * max(delta.norm(), 1e-6)
    assert len({m.accuracy for m in meter.measure(dirs, tasks[0])}) > 1  # the adapters do differ


def test_the_peft_check_names_an_adapter_whose_batched_result_differs(micro_generator, tmp_path) -> None:
    from dataclasses import replace

    from llgbm.recipes.evaluate import check_against_peft

    meter, dirs, tasks = _meter_and_adapters(micro_generator, tmp_path)
    measured = meter.measure(dirs[:3], tasks[0])
    check_against_peft(meter, dirs[:3], measured, tasks[0], "float32")  # agrees
    off = replace(measured[1], accuracy=measured[1].accuracy + 2 / len(tasks[0].test))
    with pytest.raises(LlgbmError, match="generated-0: the batched evaluation disagrees with PEFT"):
        check_against_peft(meter, dirs[:3], [measured[0], off, measured[2]], tasks[0], "float32")
