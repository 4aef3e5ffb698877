import subprocess
import sys

import pytest
import torch

from llgbm.delta import DeltaComputer, peft_delta, stack_adapters
from llgbm.delta_cache import DeltaCache
from llgbm.errors import LlgbmError
from llgbm.evaluate import METHODS, delta_alignment, gain_share, mean_adapter, nearest_task, run_evaluation
from llgbm.generate import generate_from_file, open_generator, read_prompts
from llgbm.lora import lora_scaling
from llgbm.models import load_base, load_tokenizer
from llgbm.probes import tokenize_probes


def test_mean_and_nearest_baselines_on_a_hand_made_case() -> None:
    one = {"m": (torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0], [5.0]]))}
    two = {"m": (torch.tensor([[3.0, 4.0]]), torch.tensor([[1.0], [1.0]]))}
    mean = mean_adapter([one, two])
    assert torch.equal(mean["m"][0], torch.tensor([[2.0, 3.0]])) and torch.equal(mean["m"][1], torch.tensor([[2.0], [3.0]]))
    tasks = {"north": torch.tensor([[0.0, 1.0], [0.2, 1.0]]), "east": torch.tensor([[1.0, 0.0], [1.0, 0.3]])}
    assert nearest_task(torch.tensor([[0.9, 0.2], [1.0, -0.1]]), tasks) == "east"
    assert nearest_task(torch.tensor([[0.1, 2.0]]), tasks) == "north"


def test_alignment_and_gain_share_on_a_hand_made_case() -> None:
    target = torch.tensor([2.0, 0.0])
    stats = delta_alignment([torch.tensor([1.0, 0.0]), torch.tensor([0.0, 3.0])], target)
    assert stats["delta_cosine_mean"] == pytest.approx(0.5) and stats["delta_cosine_std"] == pytest.approx(0.5)
    assert (stats["delta_cosine_min"], stats["delta_cosine_max"]) == (0.0, 1.0)
    assert stats["delta_mse"] == pytest.approx(((1.0 + 0.0) / 2 + (4.0 + 9.0) / 2) / 2)
    assert stats["delta_norm_ratio"] == pytest.approx((1.0 + 3.0) / 2 / 2.0)
    assert delta_alignment([torch.zeros(2)], target)["delta_cosine_mean"] is None  # the base has no direction
    assert gain_share(0.5, 0.1, 0.9) == pytest.approx(0.5)
    assert gain_share(0.5, 0.1, 0.1) is None


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
        assert row["teacher"]["delta_cosine_mean"] == pytest.approx(1.0)
        assert row["base"]["delta_cosine_mean"] is None and row["base"]["delta_norm_ratio"] == 0.0
        assert len(row["nearest_tasks"]) == 2 and "largest" not in row["nearest_tasks"]  # only training tasks
    assert summary["heldout"]["accuracy"]["teacher"] == per_task["largest"]["teacher"]["accuracy"]
    assert (tmp_path / "adapters" / "largest" / "generated-1" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "adapters" / "mean_teacher" / "adapter_config.json").is_file()


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
    from llgbm.config import BaseConfig, TinyModelConfig
    from llgbm.models import prepare_base

    other = tmp_path / "other-base"
    prepare_base(BaseConfig(tiny=TinyModelConfig(hidden_size=16, num_heads=2, num_kv_heads=1, intermediate_size=32),
                            pretrain_steps=0), ["a", "b"], [], other)
    with pytest.raises(LlgbmError, match="trained for another base model"):
        open_generator(micro_generator["generator"], other)
