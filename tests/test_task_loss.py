"""The task loss (behaviour_loss: sft): the batched cross-entropy of generated adapters on their own
records, checked against PEFT, and the records it may see."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from llgbm.artifacts.adapters import load_peft_model, save_adapter
from llgbm.core.lora import layout_of_model, lora_scaling, stack_adapters
from llgbm.core.task_loss import IGNORE, answer_cross_entropy, group_cross_entropy
from llgbm.data.tasks import Record, Task
from llgbm.infra.errors import LlgbmError
from llgbm.recipes.train import task_records
from llgbm.testing import random_adapter, random_model, tiny_shape

from .conftest import micro_config


def _records(generator: torch.Generator, n: int, k: int, length: int) -> tuple[torch.Tensor, ...]:
    """Right-padded records of unequal length whose last 1-2 real tokens are the answer."""
    ids = torch.randint(3, 32, (n, k, length), generator=generator)
    lengths = torch.randint(length - 3, length + 1, (n, k), generator=generator)
    positions = torch.arange(length)
    mask = (positions < lengths[..., None]).long()
    answer = (positions >= lengths[..., None] - 1 - (lengths[..., None] % 2)) & mask.bool()
    labels = torch.where(answer, ids, torch.full_like(ids, IGNORE))
    return ids * mask, mask, labels


def test_group_cross_entropy_on_a_hand_made_case() -> None:
    # Two groups of three positions; group 0 scores positions 0 and 2, group 1 position 1: the three scored
    # tokens in that (row-major) order. With logits [0, log 3], token 1 has probability 3/4, token 0 1/4.
    scored = torch.tensor([[True, False, True], [False, True, False]])
    logits = torch.tensor([0.0, math.log(3.0)]).repeat(3, 1)
    targets = torch.tensor([1, 0, 0])
    losses = group_cross_entropy(logits, targets, scored)
    expected = torch.tensor([-(math.log(0.75) + math.log(0.25)) / 2, -math.log(0.25)])
    torch.testing.assert_close(losses, expected)
    assert losses.dtype == torch.float32
    assert group_cross_entropy(logits.to(torch.bfloat16), targets, scored).dtype == torch.float32
    assert group_cross_entropy(logits.double(), targets, scored).dtype == torch.float64
    with pytest.raises(ValueError, match="a group has no scored token"):
        group_cross_entropy(logits[:2], torch.tensor([1, 0]), torch.tensor([[True, True], [False, False]]))


def test_group_cross_entropy_is_each_groups_own_causal_lm_loss() -> None:
    """Rows group-major, labels IGNORE where not scored: group j's loss is the mean cross-entropy over its
    own label tokens, what transformers computes for a batch of that group alone."""
    generator = torch.Generator().manual_seed(0)
    groups, rows, length, vocab = 3, 4, 6, 11
    logits = torch.randn(groups * rows, length, vocab, generator=generator)
    labels = torch.randint(0, vocab, (groups * rows, length), generator=generator)
    labels[torch.rand(groups * rows, length, generator=generator) < 0.5] = IGNORE
    labels[:, -1] = 5  # at least one label per row (the last one is predicted by position length - 2)
    targets = torch.nn.functional.pad(labels, (0, 1), value=IGNORE)[:, 1:]
    scored = targets != IGNORE
    losses = group_cross_entropy(logits[scored], targets[scored], scored.view(groups, -1))
    for j in range(groups):
        own = slice(j * rows, (j + 1) * rows)
        alone = torch.nn.functional.cross_entropy(logits[own].reshape(-1, vocab), targets[own].reshape(-1), ignore_index=IGNORE)
        torch.testing.assert_close(losses[j], alone)


def test_batched_task_loss_equals_the_peft_models_own_cross_entropy(tmp_path) -> None:
    cfg = micro_config()
    base = random_model(tiny_shape(cfg.base.tiny)).double()
    layout = layout_of_model(base, cfg.lora)
    generator = torch.Generator().manual_seed(0)
    adapters = [{k: (a.double() * 4, b.double() * 4) for k, (a, b) in random_adapter(layout, generator).items()}
                for _ in range(3)]
    ids, mask, labels = _records(generator, 3, 5, 9)
    batched = answer_cross_entropy(base, layout, stack_adapters(adapters), lora_scaling(cfg.lora), ids, mask, labels)
    for j, adapter in enumerate(adapters):
        save_adapter(random_model(tiny_shape(cfg.base.tiny)), {k: (a.float(), b.float()) for k, (a, b) in adapter.items()},
                     layout, cfg.lora, tmp_path / str(j))
        peft = load_peft_model(copy.deepcopy(base), tmp_path / str(j))
        for module in peft.modules():  # PEFT loads the adapter in float32; compare in float64
            if hasattr(module, "lora_A"):
                module.double()
        with torch.no_grad():  # (transformers' own `labels=` loss casts the logits to float32)
            logits = peft(input_ids=ids[j], attention_mask=mask[j]).logits
        expected = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[j][:, 1:].reshape(-1),
                                                     ignore_index=IGNORE)
        assert float(batched[j]) == pytest.approx(float(expected), rel=1e-9)
    assert len(set(batched.tolist())) == 3  # each adapter is scored on its own rows


def test_task_loss_differentiates_the_adapters() -> None:
    cfg = micro_config()
    base = random_model(tiny_shape(cfg.base.tiny))
    layout = layout_of_model(base, cfg.lora)
    generator = torch.Generator().manual_seed(1)
    adapters = stack_adapters([random_adapter(layout, generator) for _ in range(2)])
    leaves = [t.requires_grad_() for pair in adapters.values() for t in pair]
    loss = answer_cross_entropy(base, layout, adapters, lora_scaling(cfg.lora), *_records(generator, 2, 3, 7)).mean()
    grads = torch.autograd.grad(loss, leaves)
    assert all(torch.isfinite(g).all() for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0


class _Tokenizer:
    """Whitespace tokens, as ids of a growing vocabulary: enough for record_batch."""
    pad_token_id = 0

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict:
        return {"input_ids": [self.vocab.setdefault(w, len(self.vocab) + 1) for w in text.split()]}


def test_task_records_hold_only_the_training_tasks_training_records() -> None:
    def task(name: str) -> Task:
        return Task(name, ("x", "y"), tuple(Record(f"{name} train {i}", "x") for i in range(4)),
                    tuple(Record(f"{name} test {i}", "y") for i in range(2)))

    tokenizer = _Tokenizer()
    training = [task("a"), task("b")]
    batch, rows = task_records(training, ["b", "a", "b"], 3, tokenizer)
    words = {v: k for k, v in tokenizer.vocab.items()}
    texts = [" ".join(words[int(i)] for i in row if int(i)) for row in batch["input_ids"]]
    assert texts == [f"{r.prompt} {r.response}" for t in training for r in t.train]  # no test record, no other task
    assert [[texts[i].split()[0] for i in r] for r in rows] == [["b"] * 4, ["a"] * 4, ["b"] * 4]
    with pytest.raises(LlgbmError, match="sft.records: 5 per step, but task 'a' has only 4 training records"):
        task_records(training, ["a"], 5, tokenizer)
