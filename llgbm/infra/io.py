"""Atomic file and directory writes: a killed run never leaves a half-written output behind."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from llgbm.infra.errors import LlgbmError


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def temp_file_beside(path: Path) -> tuple[int, str]:
    """(fd, name) of a new temporary file in `path`'s directory, to be renamed onto `path`. mkstemp makes it
    0600; it gets the mode `path` would have had from open(): the existing file's, else 0666 less the umask."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        mode = stat.S_IMODE(path.stat().st_mode) if path.is_file() else 0o666 & ~_umask()
        os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    return fd, tmp


def write_atomic(path: Path, write: Callable[[str], None]) -> None:
    """Call write(temporary path) on a new file beside `path`, then rename it onto `path`, so that `path`
    holds either its old content or all of the new one (whatever library writes the bytes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_file_beside(path)
    mode = stat.S_IMODE(os.fstat(fd).st_mode)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, mode)  # a writer may have replaced the file (safetensors makes it 0600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes_atomic(path: Path, data: bytes) -> None:
    write_atomic(path, lambda tmp: Path(tmp).write_bytes(data))


def write_json_atomic(path: Path, value: Any) -> None:
    write_bytes_atomic(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode())


def _missing_parents(path: Path) -> list[Path]:
    """The ancestors of `path` that do not exist yet, deepest first."""
    return [p for p in path.absolute().parents if not p.exists()]


def _give_default_modes(directory: Path) -> None:
    """The modes open() and mkdir() would give (0666 / 0777 less the umask) to everything under directory:
    some writers (safetensors) create their files 0600, which would lock out other users of the outputs."""
    umask = _umask()
    for path in directory.rglob("*"):
        if not path.is_symlink():
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a scratch directory that replaces `path` only if the block finishes without error.

    On error nothing changes: the scratch directory and any parent created for it are removed, and what
    `path` held stays. On success the old `path` is moved aside before the new one is moved in and only
    then deleted, so no moment has `path` half-deleted.
    """
    path = Path(path)
    created = _missing_parents(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it 0700; it becomes `path`, so it gets mkdir's mode
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for parent in created:
            with contextlib.suppress(OSError):
                parent.rmdir()
        raise
    _give_default_modes(tmp)
    if path.exists() or path.is_symlink():
        old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
        os.replace(path, old / path.name)
        try:
            os.replace(tmp, path)
        except BaseException:
            os.replace(old / path.name, path)
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        finally:
            shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)


def read_text(path: Path, what: str) -> str:
    """A UTF-8 text file's content; a missing or undecodable file is a one-line error naming it."""
    path = Path(path)
    if path.is_dir():
        raise LlgbmError(f"{path}: is a directory; expected the {what}")
    if not path.is_file():
        raise LlgbmError(f"{path}: {what} not found")
    try:
        return path.read_bytes().decode("utf-8-sig")  # a BOM is not part of the text
    except UnicodeDecodeError as exc:
        raise LlgbmError(f"{path}: {what} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None


def read_json(path: Path, what: str) -> Any:
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise LlgbmError(f"{path}: {what} is not valid JSON ({exc})") from None


def read_jsonl_lines(path: Path, what: str) -> list[tuple[int, Any]]:
    """(line number, value) for each non-blank line of a JSON Lines file; an error names the line."""
    values = []
    for number, line in enumerate(read_text(path, what).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            values.append((number, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise LlgbmError(f"{path}: line {number} of the {what} is not valid JSON ({exc.msg})") from None
    return values


def read_jsonl(path: Path, what: str) -> list[Any]:
    return [value for _, value in read_jsonl_lines(path, what)]
