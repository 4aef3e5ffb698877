"""Atomic writes give files and directories the modes a plain open() or mkdir() would."""
from __future__ import annotations

import os
import stat
from pathlib import Path

from llgbm.infra.io import atomic_dir, write_bytes_atomic


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_writes_follow_the_umask_and_keep_an_existing_mode(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        new = tmp_path / "new.json"
        write_bytes_atomic(new, b"{}")
        assert _mode(new) == 0o644  # not mkstemp's 0600
        os.chmod(new, 0o640)
        write_bytes_atomic(new, b"[]")
        assert _mode(new) == 0o640 and new.read_bytes() == b"[]"
        os.umask(0o077)
        write_bytes_atomic(tmp_path / "private", b"x")
        assert _mode(tmp_path / "private") == 0o600
        os.umask(0o022)
        with atomic_dir(tmp_path / "model") as scratch:
            (scratch / "weights").write_bytes(b"w")
        assert _mode(tmp_path / "model") == 0o755  # not mkdtemp's 0700
    finally:
        os.umask(old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "new.json", "private"]  # no temporary left


def test_files_a_library_writes_0600_get_the_default_mode(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    from llgbm.infra.io import write_atomic

    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "entry.safetensors", lambda tmp: save_file({"a": torch.zeros(1)}, tmp))
        with atomic_dir(tmp_path / "adapter") as scratch:
            save_file({"a": torch.zeros(1)}, str(scratch / "adapter_model.safetensors"))
            (scratch / "sub").mkdir(mode=0o700)
        assert _mode(tmp_path / "entry.safetensors") == 0o644  # safetensors alone makes it 0600
        assert _mode(tmp_path / "adapter" / "adapter_model.safetensors") == 0o644
        assert _mode(tmp_path / "adapter" / "sub") == 0o755
    finally:
        os.umask(old)
