"""What llgbm writes loads the way a user loads a model: AutoTokenizer, AutoModelForCausalLM and
PeftModel.from_pretrained, with nothing llgbm-specific (the snippet in README's "Loading what llgbm
writes")."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from llgbm.generate import generate_from_file
from llgbm.models import load_tokenizer
from llgbm.tasks import format_prompt, world_vocabulary

from .conftest import checkpoint_dirs


def _texts(tasks) -> list[str]:
    records = [r for t in tasks for r in (*t.train[:20], *t.test[:20])]
    return [r.prompt for r in records] + [f"{r.prompt} {r.response}" for r in records]


def test_auto_tokenizer_gives_the_ids_load_tokenizer_gives(micro: dict) -> None:
    auto = AutoTokenizer.from_pretrained(str(micro["base"]))
    ours = load_tokenizer(micro["base"])
    texts = _texts(micro["tasks"]) + ["text outside the task world: Übergrößen, 42 <eos>"]
    for text in texts:
        assert auto(text)["input_ids"] == ours(text)["input_ids"], text
    assert (auto.pad_token_id, auto.eos_token_id) == (ours.pad_token_id, ours.eos_token_id)
    # Every word of the world is one token, bare or after a space (what the tiny model was trained on).
    for word in world_vocabulary():
        for form in (word, " " + word):
            pieces = [p for p in form.replace(":", " :").split()]
            assert len(auto(form, add_special_tokens=False)["input_ids"]) == len(pieces), form
    assert len(auto(format_prompt("first", [1, 2, 3, 4, 5]))["input_ids"]) == 12


def _logits(model, tokenizer, text: str) -> torch.Tensor:
    with torch.no_grad():
        return model(**tokenizer(text, return_tensors="pt")).logits


@pytest.fixture(scope="module")
def generated_adapter(micro_generator: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    prompts = tmp_path_factory.mktemp("prompts") / "prompts.txt"
    task = micro_generator["tasks"][0]
    prompts.write_text("\n".join(r.prompt for r in task.test[:8]) + "\n")
    out = tmp_path_factory.mktemp("generated") / "adapter"
    generate_from_file(micro_generator["generator"], prompts, out)
    return out


def test_written_adapters_load_with_peft_onto_auto_model(micro_generator: dict, generated_adapter: Path) -> None:
    base_dir = str(micro_generator["base"])
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    text = micro_generator["tasks"][0].test[0].prompt
    base_logits = _logits(AutoModelForCausalLM.from_pretrained(base_dir), tokenizer, text)
    adapters = {"generated": generated_adapter, "teacher": checkpoint_dirs(micro_generator["teachers"])[-1]}
    for name, adapter in adapters.items():
        # A fresh base per adapter: PEFT injects its layers in place.
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), str(adapter))
        logits = _logits(model, tokenizer, text)
        assert logits.shape == base_logits.shape
        assert (logits - base_logits).abs().max() > 1e-4, f"the {name} adapter does not change the logits"
