"""Probe sets: how many, from which tasks, never from a held-out one."""
from __future__ import annotations

from dataclasses import replace

import pytest

from llgbm.artifacts.base_model import build_tiny_tokenizer
from llgbm.data.probes import (
    assert_disjoint,
    build_evaluation_probe_set,
    build_probe_set,
    generic_length,
    training_texts,
)
from llgbm.data.tasks import make_tasks, vocabulary
from llgbm.infra.errors import LlgbmError
from llgbm.infra.paths import TASK_FILES_DIR

from .conftest import micro_config, micro_training


@pytest.fixture(scope="module")
def world():
    cfg = micro_config()
    tasks = make_tasks(cfg.tasks, TASK_FILES_DIR)
    tokenizer = build_tiny_tokenizer(vocabulary(tasks))
    return cfg, tasks, tokenizer


def _source(text: str, tasks) -> str | None:
    return next((t.name for t in tasks for r in t.train if r.prompt == text), None)


def test_the_seeds_probe_set_counts_probe_count(world) -> None:
    cfg, tasks, tokenizer = world
    training = micro_training(cfg, tasks)
    probes = build_probe_set(cfg.probes, cfg.probe_count, training, generic_length(cfg.tasks), tokenizer)
    assert len(probes.texts) == cfg.probe_count == 4
    assert [_source(t, tasks) is None for t in probes.texts] == [True, False, True, False]  # generic, task, ...


def test_per_task_probes_come_from_every_training_task_and_no_heldout_one(world) -> None:
    cfg, tasks, tokenizer = world
    settings = micro_config(probes={"per_task": True}).probes
    training = micro_training(cfg, tasks)
    probes = build_probe_set(settings, 3, training, generic_length(cfg.tasks), tokenizer)
    sources = [_source(t, tasks) for t in probes.texts]
    assert len(probes.texts) == 3 * len(training) * 2  # per task, per probe type
    assert sorted(s for s in sources if s) == sorted([t.name for t in training] * 3)
    assert "largest" not in sources  # held out


def test_generic_probes_need_the_builtin_world(world) -> None:
    cfg, tasks, tokenizer = world
    with pytest.raises(LlgbmError, match="'generic' probes exist for the built-in tasks only"):
        build_probe_set(cfg.probes, 4, tasks, None, tokenizer)


def test_evaluation_probes_are_test_prompts_of_every_task_heldout_first(world) -> None:
    cfg, tasks, tokenizer = world
    probes = build_evaluation_probe_set(cfg.probes, 7, 0, tasks, cfg.heldout_tasks, tokenizer)
    test_source = {r.prompt: t.name for t in tasks for r in t.test}
    assert len(set(probes.texts)) == 7 and (probes.template, probes.max_length) == ("raw", cfg.probes.max_length)
    sources = [test_source.get(text) for text in probes.texts]
    assert sources[0] == "largest"  # held out, and first in the round-robin
    assert sorted(sources[:3]) == sorted(t.name for t in tasks) and None not in sources
    assert all(_source(text, tasks) is None for text in probes.texts)  # no train prompt
    assert probes == build_evaluation_probe_set(cfg.probes, 7, 0, tasks, cfg.heldout_tasks, tokenizer)
    assert probes != build_evaluation_probe_set(cfg.probes, 7, 1, tasks, cfg.heldout_tasks, tokenizer)


def test_a_test_prompt_that_is_also_a_train_prompt_is_no_evaluation_probe(world) -> None:
    cfg, tasks, tokenizer = world
    first = tasks[0]
    # Every test prompt of the first task but one is also a train prompt of another task.
    leaked = [replace(tasks[1], train=tasks[1].train + first.test[1:])]
    world_with_leak = [first, *leaked, *tasks[2:]]
    probes = build_evaluation_probe_set(cfg.probes, 60, 0, world_with_leak, [], tokenizer)
    first_test = {r.prompt for r in first.test}
    assert [t for t in probes.texts if t in first_test] == [first.test[0].prompt]
    with pytest.raises(LlgbmError, match="evaluate.probe_count: 1000 evaluation probes asked for"):
        build_evaluation_probe_set(cfg.probes, 1000, 0, world_with_leak, [], tokenizer)


def test_an_evaluation_probe_seen_in_training_is_an_error(world) -> None:
    cfg, tasks, tokenizer = world
    probes = build_evaluation_probe_set(cfg.probes, 4, 0, tasks, cfg.heldout_tasks, tokenizer)
    training = build_probe_set(cfg.probes, cfg.probe_count, micro_training(cfg, tasks),
                               generic_length(cfg.tasks), tokenizer)
    seen = training_texts(tasks, training, tokenizer)
    assert_disjoint(probes, seen)
    assert set(training.texts) <= seen and tasks[0].train[0].prompt in seen
    with pytest.raises(LlgbmError, match="evaluate: 1 evaluation probe"):
        assert_disjoint(probes, seen | {probes.texts[2]})
