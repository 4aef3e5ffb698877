"""What llgbm writes loads the way a user loads a model: AutoTokenizer, AutoModelForCausalLM and
PeftModel.from_pretrained, with nothing llgbm-specific (the snippet in README's "Loading what llgbm
writes")."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from llgbm.artifacts.base_model import load_tokenizer
from llgbm.recipes.generate import generate_from_file

from .conftest import checkpoint_dirs


def _texts(tasks) -> list[str]:
    records = [r for t in tasks for r in (*t.train[:20], *t.test[:20])]
    return [r.prompt for r in records] + [f"{r.prompt} {r.response}" for r in records] + [
        "text outside the task world: 42 <eos>"]


def test_auto_tokenizer_gives_the_ids_load_tokenizer_gives(micro: dict) -> None:
    auto = AutoTokenizer.from_pretrained(str(micro["base"]))
    ours = load_tokenizer(micro["base"])
    texts = _texts(micro["tasks"])
    assert auto(texts)["input_ids"] == ours(texts)["input_ids"]
    assert min(len(ids) for ids in auto(texts)["input_ids"]) > 1
    assert (auto.pad_token_id, auto.eos_token_id, auto.unk_token_id) == (ours.pad_token_id, ours.eos_token_id,
                                                                         ours.unk_token_id)


@pytest.mark.e2e  # a subprocess
def test_auto_tokenizer_with_trust_remote_code(micro: dict, tmp_path: Path) -> None:
    # Scripts that pass trust_remote_code=True load the class through the module in models/base; a
    # subprocess, so the module cache goes to tmp_path and not the user's.
    texts = _texts(micro["tasks"])[:50]
    script = ("import json, sys; from transformers import AutoTokenizer; "
              f"t = AutoTokenizer.from_pretrained({str(micro['base'])!r}, trust_remote_code=True); "
              "print(json.dumps(t(json.load(sys.stdin))['input_ids']))")
    result = subprocess.run([sys.executable, "-c", script], input=json.dumps(texts), capture_output=True, text=True,
                            env={**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules")}, check=True)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == load_tokenizer(micro["base"])(texts)["input_ids"]


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
    adapters = {"generated": generated_adapter, "teacher": checkpoint_dirs(micro_generator["teachers"])[-1],
                "shared init": micro_generator["teachers"] / "init"}
    for name, adapter in adapters.items():
        # A fresh base per adapter: PEFT injects its layers in place.
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), str(adapter))
        logits = _logits(model, tokenizer, text)
        assert logits.shape == base_logits.shape
        change = (logits - base_logits).abs().max().item()
        if name == "shared init":
            assert change == 0.0  # PEFT's initialisation: B = 0, the adapter is the identity
        else:
            assert change > 1e-4, f"the {name} adapter does not change the logits"
