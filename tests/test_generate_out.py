"""`llgbm generate --out` writes only where it may: new or empty directories, or (with --force) a
directory holding exactly an adapter llgbm wrote; never the working directory or its parents; and a
failed run leaves the old directory as it was. (The refusals through the real CLI are rows of
test_bad_input.py.)"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import llgbm.artifacts.generator_files
from llgbm.artifacts.generator_files import ADAPTER_MARKER, is_llgbm_adapter
from llgbm.infra.errors import LlgbmError
from llgbm.infra.io import atomic_dir
from llgbm.recipes.generate import check_out_dir, generate_from_file


def _listing(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_atomic_dir_keeps_the_old_directory_when_the_block_fails(tmp_path: Path) -> None:
    target = tmp_path / "out"
    (target / "sub").mkdir(parents=True)
    (target / "sub" / "a.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as scratch:
            (scratch / "half.txt").write_text("half")
            raise RuntimeError("killed")
    assert _listing(target) == {"sub/a.txt": b"old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no scratch left behind
    with atomic_dir(target) as scratch:
        (scratch / "new.txt").write_text("new")
    assert _listing(target) == {"new.txt": b"new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_dir_removes_the_parents_it_created_when_the_block_fails(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "a" / "b" / "out"):
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def _fake_adapter(directory: Path) -> None:
    directory.mkdir(parents=True)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (directory / name).write_text("{}")
    (directory / ADAPTER_MARKER).write_text(json.dumps(
        {"written_by": "llgbm", "files": ["adapter_config.json", "adapter_model.safetensors"]}))


@pytest.mark.parametrize("setup, force, message", [
    (lambda d: None, False, None),  # missing: fine
    (lambda d: d.mkdir(), False, None),  # empty: fine
    (lambda d: (d.mkdir(), (d / "notes.txt").write_text("mine")), True, "not an adapter written by llgbm"),
    (lambda d: (d.mkdir(), (d / ADAPTER_MARKER).write_text("{")), True, "not an adapter written by llgbm"),
    (lambda d: (d.mkdir(), (d / ADAPTER_MARKER).write_text("[]")), True, "not an adapter written by llgbm"),
    (lambda d: _fake_adapter(d), False, "--force"),
    (lambda d: _fake_adapter(d), True, None),
    (lambda d: (_fake_adapter(d), (d / "notes.txt").write_text("mine")), True, "not an adapter written by llgbm"),
    (lambda d: d.write_text("a file"), True, "not a directory"),
    (lambda d: d.symlink_to(d.parent), True, "symbolic link"),
    (lambda d: None, True, None),
])
def test_check_out_dir(tmp_path: Path, setup, force: bool, message: str | None) -> None:
    out = tmp_path / "out"
    setup(out)
    if message is None:
        check_out_dir(out, force)
    else:
        with pytest.raises(LlgbmError, match=message):
            check_out_dir(out, force)


def test_check_out_dir_refuses_a_path_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(LlgbmError, match="is not a directory"):
        check_out_dir(tmp_path / "file" / "sub" / "out", force=False)


def test_check_out_dir_never_takes_the_working_directory_or_a_parent(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    for out in (Path("."), Path(".."), Path("../.."), work, tmp_path, Path("/")):
        with pytest.raises(LlgbmError, match="working directory"):
            check_out_dir(out, force=True)
    # even one that looks like an llgbm adapter
    _fake_adapter(tmp_path / "c")
    monkeypatch.chdir(tmp_path / "c")
    with pytest.raises(LlgbmError, match="working directory"):
        check_out_dir(Path("."), force=True)


@pytest.fixture()
def prompts_file(micro_generator: dict, tmp_path: Path) -> Path:
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(r.prompt for r in micro_generator["tasks"][0].test[:8]) + "\n")
    return path


def test_generate_writes_a_marked_adapter_and_force_replaces_only_it(micro_generator: dict, prompts_file: Path,
                                                                      tmp_path: Path) -> None:
    out = tmp_path / "adapters" / "one"
    generate_from_file(micro_generator["generator"], prompts_file, out)
    assert is_llgbm_adapter(out)
    marker = json.loads((out / ADAPTER_MARKER).read_text())
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(marker["files"])
    first = _listing(out)
    with pytest.raises(LlgbmError, match="--force"):
        generate_from_file(micro_generator["generator"], prompts_file, out)
    assert _listing(out) == first
    # with --force the adapter is replaced (other prompts, other weights); the directory holds only it
    prompts_file.write_text("\n".join(r.prompt for r in micro_generator["tasks"][1].test[:8]) + "\n")
    generate_from_file(micro_generator["generator"], prompts_file, out, force=True)
    assert is_llgbm_adapter(out)
    assert _listing(out)["adapter_model.safetensors"] != first["adapter_model.safetensors"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["one"]


def test_a_failed_generation_leaves_the_old_adapter_intact(micro_generator: dict, prompts_file: Path,
                                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "adapter"
    generate_from_file(micro_generator["generator"], prompts_file, out)
    before = _listing(out)

    def failing_save(base, tensors, layout, lora, out_dir: Path) -> None:
        (Path(out_dir) / "adapter_model.safetensors").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(llgbm.artifacts.generator_files, "save_adapter", failing_save)
    with pytest.raises(LlgbmError, match="disk full"):
        generate_from_file(micro_generator["generator"], prompts_file, out, force=True)
    assert _listing(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter", "prompts.txt"]
