"""Probe sets: how many, from which tasks, never from a held-out one."""
from __future__ import annotations

import pytest

from llgbm.errors import LlgbmError
from llgbm.models import build_tiny_tokenizer
from llgbm.probes import build_probe_set, generic_length
from llgbm.tasks import make_tasks, training_tasks, vocabulary

from .conftest import micro_config


@pytest.fixture(scope="module")
def world():
    cfg = micro_config()
    tasks = make_tasks(cfg.tasks)
    tokenizer = build_tiny_tokenizer(vocabulary(tasks))
    return cfg, tasks, tokenizer


def _source(text: str, tasks) -> str | None:
    return next((t.name for t in tasks for r in t.train if r.prompt == text), None)


def test_the_seeds_probe_set_counts_probe_count(world) -> None:
    cfg, tasks, tokenizer = world
    training = training_tasks(tasks, cfg)
    probes = build_probe_set(cfg.probes, cfg.probe_count, training, generic_length(cfg.tasks), tokenizer)
    assert len(probes.texts) == cfg.probe_count == 4
    assert [_source(t, tasks) is None for t in probes.texts] == [True, False, True, False]  # generic, task, ...


def test_per_task_probes_come_from_every_training_task_and_no_heldout_one(world) -> None:
    cfg, tasks, tokenizer = world
    settings = micro_config(probes={"per_task": True}).probes
    training = training_tasks(tasks, cfg)
    probes = build_probe_set(settings, 3, training, generic_length(cfg.tasks), tokenizer)
    sources = [_source(t, tasks) for t in probes.texts]
    assert len(probes.texts) == 3 * len(training) * 2  # per task, per probe type
    assert sorted(s for s in sources if s) == sorted([t.name for t in training] * 3)
    assert "largest" not in sources  # held out


def test_generic_probes_need_the_builtin_world(world) -> None:
    cfg, tasks, tokenizer = world
    with pytest.raises(LlgbmError, match="'generic' probes exist for the built-in tasks only"):
        build_probe_set(cfg.probes, 4, tasks, None, tokenizer)
