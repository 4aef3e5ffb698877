"""Bad input, run through the real entry points (`python -m llgbm.cli ...`, `python stages/<name>.py`):
each case must exit non-zero with exactly one stderr line `error: ...` naming the file or key, print no
traceback, and leave its directory exactly as it was (nothing created, changed or deleted).

To add a case: write a function that builds the bad input in the case's directory and returns the
command (arguments after `python`), and add a row to CASES with the fragments the message must hold.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import yaml

from llgbm.artifacts.generator_files import ADAPTER_MARKER
from llgbm.data.tasks import save_tasks

from .conftest import MICRO_PARAMS, checkpoint_dirs

pytestmark = pytest.mark.e2e  # subprocess CLI, dvc repro or accelerate launch

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Case:
    id: str
    build: Callable[[Path, dict], list[str]]  # (case dir, world) -> command after `python`, run in case dir
    expect: tuple[str, ...]  # fragments of the one error line; at least one names the file or key
    needs: str | None = None  # a conftest fixture the build reads (e.g. "micro", "micro_train_inputs", "micro_generator")


# --- entry points -----------------------------------------------------------------------------------

def cli(*args: str) -> list[str]:
    return ["-m", "llgbm.cli", *args]


def stage(name: str) -> list[str]:
    return [str(ROOT / "stages" / f"{name}.py")]


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def params(d: Path, **overrides: object) -> None:
    write(d / "params.yaml", yaml.safe_dump({**MICRO_PARAMS, **overrides}))


def task_files(d: Path, content: str | bytes, name: str = "task.jsonl") -> list[str]:
    """params.yaml naming one user task file (in data/tasks/), and the tasks stage to read it."""
    params(d, tasks={"source": "files", "files": [name]}, heldout_tasks=[], probes={"types": ["task"]},
           base={**MICRO_PARAMS["base"], "pretrain_primitive_share": 0.0})
    write(d / "data" / "tasks" / name, content)
    return stage("tasks")


def truncated_embeddings(d: Path, w: dict) -> list[str]:
    path = train_workspace(d, w) / "cache" / "embeddings" / "embeddings.safetensors"
    path.write_bytes(path.read_bytes()[:40])
    return stage("train")


def tasks_json(d: Path, content: str | bytes) -> list[str]:
    """A malformed data/tasks.json, read by the embed stage (its first act)."""
    params(d)
    write(d / "data" / "tasks.json", content)
    return stage("embed")


# --- generate ---------------------------------------------------------------------------------------

def prompts(d: Path, w: dict, name: str = "prompts.txt", content: str | bytes | None = None) -> Path:
    if content is None:
        content = "\n".join(r.prompt for r in w["tasks"][0].test[:8]) + "\n"
    return write(d / name, content)


def generator_copy(d: Path, w: dict) -> Path:
    shutil.copytree(w["generator"], d / "gen")
    return d / "gen"


def generate(d: Path, w: dict, *, gen: Path | None = None, prompt_file: Path | None = None, out: str = "out",
             extra: tuple[str, ...] = ()) -> list[str]:
    gen = gen or Path(w["generator"])
    prompt_file = prompt_file or prompts(d, w)
    return cli("generate", "--generator", str(gen), "--prompts", str(prompt_file), "--out", out, *extra)


def edit_generator_config(d: Path, w: dict, change: Callable[[dict], None]) -> list[str]:
    gen = generator_copy(d, w)
    meta = json.loads((gen / "config.json").read_text())
    change(meta)
    (gen / "config.json").write_text(json.dumps(meta))
    return generate(d, w, gen=gen)


def edit_generator_weights(d: Path, w: dict, change: Callable[[bytes], bytes]) -> list[str]:
    gen = generator_copy(d, w)
    weights = gen / "generator.safetensors"
    if change is None:
        weights.unlink()
    else:
        weights.write_bytes(change(weights.read_bytes()))
    return generate(d, w, gen=gen)


def fake_llgbm_adapter(directory: Path, extra_file: str | None = None) -> None:
    files = ["adapter_config.json", "adapter_model.safetensors"]
    for name in files:
        write(directory / name, "{}")
    write(directory / ADAPTER_MARKER, json.dumps({"written_by": "llgbm", "files": files}))
    if extra_file:
        write(directory / extra_file, "the user's notes")


def scramble(data: bytes) -> bytes:
    return hashlib.sha256(data).digest() * (len(data) // 32 + 1)


# --- deltas stage (reads every teacher adapter) -------------------------------------------------------

def deltas_workspace(d: Path, w: dict) -> Path:
    params(d)
    save_tasks(w["tasks"], d / "data" / "tasks.json")
    shutil.copy(w["split"], d / "data" / "split.json")
    shutil.copytree(w["base"], d / "models" / "base")
    shutil.copytree(w["teachers"], d / "models" / "teachers")
    return checkpoint_dirs(d / "models" / "teachers")[0]


def broken_adapter(d: Path, w: dict, name: str, content: bytes | None) -> list[str]:
    adapter = deltas_workspace(d, w)
    path = adapter / name
    path.write_bytes(content if content is not None else path.read_bytes()[: path.stat().st_size // 2])
    return stage("deltas")


# --- train stage (reads the delta cache and its own checkpoints) ----------------------------------------

def train_workspace(d: Path, w: dict, **overrides: object) -> Path:
    params(d, **overrides)
    save_tasks(w["tasks"], d / "data" / "tasks.json")
    shutil.copy(w["split"], d / "data" / "split.json")
    shutil.copytree(w["base"], d / "models" / "base")
    shutil.copytree(w["teachers"], d / "models" / "teachers")
    shutil.copytree(w["deltas"], d / "cache" / "deltas")
    shutil.copytree(w["embeddings"], d / "cache" / "embeddings")
    return d


def training_cache_entry(deltas: Path) -> Path:
    """A cache entry that training reads: one of a training task's checkpoints (not a held-out one's)."""
    entries = json.loads((deltas / "manifest.json").read_text())["entries"].values()
    return deltas / next(e["file"] for e in sorted(entries, key=lambda e: e["file"])
                         if e["task"] not in MICRO_PARAMS["heldout_tasks"])


def truncated_cache_entry(d: Path, w: dict) -> list[str]:
    entry = training_cache_entry(train_workspace(d, w) / "cache" / "deltas")
    entry.write_bytes(entry.read_bytes()[:40])
    return stage("train")


def cache_of_another_definition(d: Path, w: dict) -> list[str]:
    manifest = train_workspace(d, w) / "cache" / "deltas" / "manifest.json"
    content = json.loads(manifest.read_text())
    content["definition"]["scaling"] = 99.0
    manifest.write_text(json.dumps(content))
    return stage("train")


def truncated_checkpoint(d: Path, w: dict) -> list[str]:
    train_workspace(d, w)
    write(d / "checkpoints" / "train" / "step-000010.pt", b"PK\x03\x04 not a whole checkpoint")
    return stage("train")


NOT_UTF8 = b"task: \xff\xfe first\n"

CASES = [
    # params.yaml
    Case("params-not-utf8", lambda d, w: (write(d / "params.yaml", b"seed: \xff\n"), stage("tasks"))[1],
         ("params.yaml", "UTF-8")),
    Case("params-not-a-mapping", lambda d, w: (write(d / "params.yaml", "- 1\n- 2\n"), stage("tasks"))[1],
         ("params.yaml", "must be a mapping")),
    Case("params-not-yaml", lambda d, w: (write(d / "params.yaml", "seed: [1\n"), stage("tasks"))[1],
         ("params.yaml", "not valid YAML")),
    Case("params-unknown-key", lambda d, w: (params(d, sed=1), stage("tasks"))[1], ("params.yaml", "'sed'")),
    Case("params-max-grad-norm-zero", lambda d, w: (params(d, train={**MICRO_PARAMS["train"], "max_grad_norm": 0}),
                                                    stage("train"))[1], ("params.yaml", "'train.max_grad_norm'")),
    Case("params-fp16", lambda d, w: (params(d, train={**MICRO_PARAMS["train"], "mixed_precision": "fp16"}),
                                      stage("train"))[1], ("params.yaml", "'train.mixed_precision'", "fp16")),
    Case("params-delta-layers", lambda d, w: (params(d, delta_layers="middle"), stage("deltas"))[1],
         ("params.yaml", "'delta_layers'")),
    # data/split.json (the split stage's output, read by diagnostics, deltas, train and evaluate)
    Case("split-json-not-a-split",
         lambda d, w: (deltas_workspace(d, w), write(d / "data" / "split.json", '{"training": 1}'), stage("deltas"))[2],
         ("data/split.json", "not a task split"), needs="micro"),
    Case("split-heldout-not-a-task",
         lambda d, w: (params(d, heldout_tasks=["first"]), save_tasks(w["tasks"][1:], d / "data" / "tasks.json"),
                       stage("split"))[2],
         ("heldout_tasks", "not tasks of the tasks file", "last"), needs="micro"),
    # training state: the delta cache and checkpoints
    Case("train-cache-entry-truncated", truncated_cache_entry, ("cache/deltas/entries", "unreadable delta cache entry"),
         needs="micro_train_inputs"),
    Case("train-cache-other-definition", cache_of_another_definition, ("cache/deltas", "scaling differs"),
         needs="micro_train_inputs"),
    Case("train-checkpoint-truncated", truncated_checkpoint,
         ("checkpoints/train/step-000010.pt", "unreadable training checkpoint"), needs="micro_train_inputs"),
    # user task files (tasks stage)
    Case("task-file-missing", lambda d, w: (params(d, tasks={"source": "files", "files": ["nope.jsonl"]},
                                                   heldout_tasks=[], probes={"types": ["task"]}), stage("tasks"))[1],
         ("data/tasks/nope.jsonl", "not found")),
    Case("task-file-outside-the-folder", lambda d, w: (params(d, tasks={"source": "files", "files": ["../x.jsonl"]},
                                                              heldout_tasks=[]), stage("check"))[1],
         ("'tasks.files'", "data/tasks/")),
    Case("generic-probes-with-task-files", lambda d, w: (params(d, tasks={"source": "files", "files": ["a.jsonl"]},
                                                                heldout_tasks=[]), stage("check"))[1],
         ("'probes.types'", "generic")),
    # checked before any stage runs (the check stage)
    Case("lora-target-matches-nothing", lambda d, w: (params(d, lora={**MICRO_PARAMS["lora"],
                                                                      "target_modules": ["no_such_proj"]}),
                                                      stage("check"))[1], ("lora.target_modules", "no_such_proj")),
    Case("heldout-named-twice", lambda d, w: (params(d, heldout_tasks=["largest", "largest"]), stage("check"))[1],
         ("'heldout_tasks'", "more than once")),
    Case("lambda-delta-infinite", lambda d, w: (write(d / "params.yaml", yaml.safe_dump(MICRO_PARAMS) + "lambda_delta: .inf\n"),
                                                stage("check"))[1], ("'lambda_delta'", "finite")),
    Case("task-file-empty-at-the-check", lambda d, w: (task_files(d, "\n"), stage("check"))[1],
         ("data/tasks/task.jsonl", "no prompts")),
    Case("tasks-sharing-every-prompt", lambda d, w: (
        [write(d / "data" / "tasks" / f"{n}.jsonl", "".join(f'{{"prompt": "p{i}", "response": "{n}{i % 2}"}}\n'
                                                         for i in range(40))) for n in ("a", "b")],
        params(d, tasks={"source": "files", "files": ["a.jsonl", "b.jsonl"]}, heldout_tasks=["b"],
               probes={"types": ["task"]}, base={**MICRO_PARAMS["base"], "pretrain_primitive_share": 0.0}),
        stage("check"))[2], ("evaluate.probe_count", "share prompts")),
    Case("heldout-not-a-task-file", lambda d, w: (task_files(d, ''.join(f'{{"prompt": "p{i}", "response": "b"}}\n' for i in range(6))),
                                                  params(d, tasks={"source": "files", "files": ["task.jsonl"]},
                                                         heldout_tasks=["tusk"], probes={"types": ["task"]},
                                                         base={**MICRO_PARAMS["base"], "pretrain_primitive_share": 0.0}),
                                                  stage("check"))[2], ("heldout_tasks", "'tusk'", "its tasks: task")),
    Case("task-file-not-utf8", lambda d, w: task_files(d, b'{"prompt": "\xff", "response": "a"}\n'),
         ("task.jsonl", "UTF-8")),
    Case("task-jsonl-bad-line", lambda d, w: task_files(d, '{"prompt": "a", "response": "b"}\n{"prompt": \n'),
         ("task.jsonl", "line 2", "not valid JSON")),
    Case("task-jsonl-record-type", lambda d, w: task_files(d, '{"prompt": "a", "response": "b"}\n\n[1, 2]\n'),
         ("task.jsonl", "line 3", "'prompt'")),
    Case("task-json-invalid", lambda d, w: task_files(d, '[{"prompt": "a"', "task.json"),
         ("task.json", "not valid JSON")),
    Case("task-json-record-type", lambda d, w: task_files(d, '[{"prompt": 1, "response": "b"}]', "task.json"),
         ("task.json", "record 0", "'prompt'")),
    Case("task-json-scalar", lambda d, w: task_files(d, '"prompts"', "task.json"),
         ("task.json", "must be a list of records")),
    Case("task-json-unknown-key", lambda d, w: task_files(d, '{"record": []}', "task.json"),
         ("task.json", "unknown key 'record'")),
    Case("task-json-options-not-list", lambda d, w: task_files(
        d, '{"options": "ab", "records": [{"prompt": "x", "response": "a"}, {"prompt": "y", "response": "b"}]}',
        "task.json"), ("task.json", "'options'")),
    Case("task-json-name-path", lambda d, w: task_files(
        d, '{"name": "../up", "records": [{"prompt": "x", "response": "a"}, {"prompt": "y", "response": "b"}]}',
        "task.json"), ("task.json", "'name'")),
    Case("task-json-train-not-list", lambda d, w: task_files(d, '{"train": {"prompt": "x"}, "test": []}', "task.json"),
         ("task.json", "'train' must be a list")),
    # data/tasks.json
    Case("tasks-json-not-utf8", lambda d, w: tasks_json(d, b'{"tasks": "\xff"}'), ("tasks.json", "UTF-8")),
    Case("tasks-json-invalid", lambda d, w: tasks_json(d, '{"tasks": ['), ("tasks.json", "not valid JSON")),
    Case("tasks-json-no-tasks", lambda d, w: tasks_json(d, '{"task": []}'), ("tasks.json", "'tasks'")),
    Case("tasks-json-task-keys", lambda d, w: tasks_json(d, '{"tasks": [{"name": "a"}]}'), ("tasks.json", "tasks[0]")),
    Case("tasks-json-record-type", lambda d, w: tasks_json(
        d, '{"tasks": [{"name": "a", "options": ["b"], "train": [{"prompt": 3, "response": "b"}], "test": []}]}'),
        ("tasks.json", "'tasks[0].train' record 0")),
    Case("tasks-json-options-type", lambda d, w: tasks_json(
        d, '{"tasks": [{"name": "a", "options": "b", "train": [], "test": []}]}'), ("tasks.json", "tasks[0].options")),
    # generate: prompt files
    Case("prompts-missing", lambda d, w: generate(d, w, prompt_file=d / "nope.txt"), ("nope.txt", "not found"),
         needs="micro_generator"),
    Case("prompts-not-utf8", lambda d, w: generate(d, w, prompt_file=prompts(d, w, content=NOT_UTF8)),
         ("prompts.txt", "UTF-8"), needs="micro_generator"),
    Case("prompts-empty", lambda d, w: generate(d, w, prompt_file=prompts(d, w, content=" \n\n")),
         ("prompts.txt", "no prompts"), needs="micro_generator"),
    Case("prompts-json-object", lambda d, w: generate(d, w, prompt_file=prompts(d, w, "p.json", '{"prompt": "x"}')),
         ("p.json", "expected a list of prompts"), needs="micro_generator"),
    Case("prompts-json-numbers", lambda d, w: generate(d, w, prompt_file=prompts(d, w, "p.json", "[1, 2]")),
         ("p.json", "item 0"), needs="micro_generator"),
    Case("prompts-json-invalid", lambda d, w: generate(d, w, prompt_file=prompts(d, w, "p.json", '["a", ')),
         ("p.json", "not valid JSON"), needs="micro_generator"),
    Case("prompts-jsonl-bad-line", lambda d, w: generate(d, w, prompt_file=prompts(d, w, "p.jsonl", '"a"\n{"b\n')),
         ("p.jsonl", "line 2"), needs="micro_generator"),
    Case("prompts-jsonl-record-no-prompt", lambda d, w: generate(
        d, w, prompt_file=prompts(d, w, "p.jsonl", '{"prompt": "a"}\n{"text": "b"}\n')), ("p.jsonl", "line 2", "'prompt'"),
        needs="micro_generator"),
    Case("prompts-a-directory", lambda d, w: generate(d, w, prompt_file=d), ("is a directory", "prompt file"),
         needs="micro_generator"),
    Case("generator-is-an-adapter", lambda d, w: generate(d, w, gen=checkpoint_dirs(Path(w["teachers"]))[0]),
         ("not a generator", "models/generator"), needs="micro_generator"),
    Case("train-embeddings-truncated", truncated_embeddings, ("embeddings.safetensors", "unreadable embeddings"),
         needs="micro_train_inputs"),
    Case("prompts-too-few", lambda d, w: generate(d, w, prompt_file=prompts(d, w, content="one prompt\n")),
         ("prompts.txt", "1 prompts"), needs="micro_generator"),
    # generate: generator directories
    Case("generator-missing", lambda d, w: generate(d, w, gen=d / "nope"), ("nope", "generator directory not found"),
         needs="micro_generator"),
    Case("generator-is-a-base-model", lambda d, w: generate(d, w, gen=Path(w["base"])), ("config.json", "'shape'"),
         needs="micro_generator"),
    Case("generator-config-missing", lambda d, w: generate(d, w, gen=write(d / "gen" / "x", "").parent),
         ("config.json", "not found"), needs="micro_generator"),
    Case("generator-config-not-json", lambda d, w: generate(d, w, gen=write(d / "gen" / "config.json", "{").parent),
         ("config.json", "not valid JSON"), needs="micro_generator"),
    Case("generator-config-missing-key", lambda d, w: edit_generator_config(d, w, lambda m: m.pop("encoder")),
         ("config.json", "'encoder'"), needs="micro_generator"),
    Case("generator-config-shape-keys", lambda d, w: edit_generator_config(d, w, lambda m: m["shape"].pop("prompts")),
         ("config.json", "'shape'"), needs="micro_generator"),
    Case("generator-config-lora-type", lambda d, w: edit_generator_config(
        d, w, lambda m: m["lora"].update(rank="four")), ("config.json", "'lora'"), needs="micro_generator"),
    Case("generator-config-shape-mismatch", lambda d, w: edit_generator_config(
        d, w, lambda m: m["shape"].update(hidden_dim=m["shape"]["hidden_dim"] + 1)),
        ("generator.safetensors", "cannot load"), needs="micro_generator"),
    Case("generator-weights-missing", lambda d, w: edit_generator_weights(d, w, None),
         ("generator.safetensors",), needs="micro_generator"),
    Case("generator-weights-truncated", lambda d, w: edit_generator_weights(d, w, lambda b: b[: len(b) // 2]),
         ("generator.safetensors",), needs="micro_generator"),
    Case("generator-weights-garbled", lambda d, w: edit_generator_weights(d, w, scramble),
         ("generator.safetensors",), needs="micro_generator"),
    Case("generator-weights-empty", lambda d, w: edit_generator_weights(d, w, lambda b: b""),
         ("generator.safetensors",), needs="micro_generator"),
    Case("base-missing", lambda d, w: generate(d, w, extra=("--base", str(d / "nobase"))), ("nobase", "not found"),
         needs="micro_generator"),
    # generate: --out
    Case("out-non-empty", lambda d, w: (write(d / "out" / "notes.txt", "mine"), generate(d, w))[1],
         ("out", "not an adapter written by llgbm"), needs="micro_generator"),
    Case("out-non-empty-force", lambda d, w: (write(d / "out" / "notes.txt", "mine"),
                                              generate(d, w, extra=("--force",)))[1],
         ("out", "not an adapter written by llgbm"), needs="micro_generator"),
    Case("out-adapter-without-force", lambda d, w: (fake_llgbm_adapter(d / "out"), generate(d, w))[1],
         ("out", "--force"), needs="micro_generator"),
    Case("out-adapter-with-user-file-force", lambda d, w: (fake_llgbm_adapter(d / "out", "notes.txt"),
                                                           generate(d, w, extra=("--force",)))[1],
         ("out", "not an adapter written by llgbm"), needs="micro_generator"),
    Case("out-is-a-file", lambda d, w: (write(d / "out", "a file"), generate(d, w, extra=("--force",)))[1],
         ("out", "not a directory"), needs="micro_generator"),
    Case("out-is-cwd", lambda d, w: generate(d, w, out=".", extra=("--force",)), (".", "working directory"),
         needs="micro_generator"),
    Case("out-is-parent", lambda d, w: generate(d, w, out="..", extra=("--force",)), ("..", "working directory"),
         needs="micro_generator"),
    # teacher adapters, read by the deltas stage
    Case("adapter-weights-truncated", lambda d, w: broken_adapter(d, w, "adapter_model.safetensors", None),
         ("adapter_model.safetensors", "cannot read"), needs="micro"),
    Case("adapter-weights-garbled", lambda d, w: broken_adapter(d, w, "adapter_model.safetensors", b"\x08" * 64),
         ("adapter_model.safetensors", "cannot read"), needs="micro"),
    Case("adapter-config-garbled", lambda d, w: broken_adapter(d, w, "adapter_config.json", b'{"r": '),
         ("adapter_config.json", "not valid JSON"), needs="micro"),
    Case("adapter-config-not-utf8", lambda d, w: broken_adapter(d, w, "adapter_config.json", b'{"r": "\xff"}'),
         ("adapter_config.json", "UTF-8"), needs="micro"),
    Case("adapter-config-not-object", lambda d, w: broken_adapter(d, w, "adapter_config.json", b"[4]"),
         ("adapter_config.json", "JSON object"), needs="micro"),
    # llgbm compare
    Case("compare-readme-no-markers", lambda d, w: (write(d / "README.md", "# results\n"),
                                                    cli("compare", "--readme", "README.md"))[1],
         ("README.md", "<!-- compare:begin -->")),
    Case("compare-readme-missing", lambda d, w: cli("compare", "--readme", "nope.md"), ("nope.md", "not found")),
    Case("compare-not-a-repository", lambda d, w: cli("compare", "--repo", "."), (".", "dvc exp show failed")),
    Case("compare-archive-not-json", lambda d, w: (write(d / "runs.json", "{runs"),
                                                   cli("compare", "--runs", "runs.json", "--record"))[1],
         ("runs.json", "not valid JSON")),
    Case("compare-archive-other-format", lambda d, w: (write(d / "runs.json", '{"format": 9, "runs": []}'),
                                                       cli("compare", "--runs", "runs.json", "--record"))[1],
         ("runs.json", "not a run archive of format 1")),
]


def snapshot(directory: Path) -> dict[str, str]:
    """Every path under directory (hidden ones too) with its content hash ('dir' for directories)."""
    state = {}
    for path in sorted(directory.rglob("*")):
        rel = str(path.relative_to(directory))
        state[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return state


def run_case(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DVC_NO_ANALYTICS": "1"}
    return subprocess.run([sys.executable, *command], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
def test_bad_input_is_one_line_error_and_writes_nothing(case: Case, tmp_path: Path,
                                                         request: pytest.FixtureRequest) -> None:
    world = request.getfixturevalue(case.needs) if case.needs else {}
    case_dir = tmp_path / "case"
    case_dir.mkdir()
    command = case.build(case_dir, world)
    before = snapshot(case_dir)
    result = run_case(command, case_dir)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in case.expect:
        assert fragment in lines[0], f"'{fragment}' not in: {lines[0]}"
    assert snapshot(case_dir) == before, "the failed command changed its directory"

