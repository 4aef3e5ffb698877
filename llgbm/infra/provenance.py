"""What made a piece of state: the library sources that computed it and the library versions they ran on.

Training checkpoints and delta-cache entries carry these, so state produced by other code or other
libraries is never silently reused. The sources are found statically (the transitive `llgbm` imports of
a module, read with `ast`), so the same code always gives the same fingerprint, whatever else a process
happens to have imported.
"""
from __future__ import annotations

import ast
import os
import platform
from importlib import metadata
from pathlib import Path

from llgbm.infra.io import sha256_file, sha256_json

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # llgbm/, this file being llgbm/infra/provenance.py
PACKAGE = PACKAGE_DIR.name
# The libraries whose numerics or file formats state depends on.
LIBRARIES = ("torch", "transformers", "peft", "accelerate", "safetensors")


def _module_path(module: str) -> Path:
    relative = module.split(".")[1:]
    package = PACKAGE_DIR.joinpath(*relative)
    return package / "__init__.py" if package.is_dir() else package.with_suffix(".py")


def _imported_modules(path: Path, module: str) -> set[str]:
    """The `llgbm` modules `path` imports (absolute or relative, at any depth of the file)."""
    found = set()
    package_parts = module.split(".")[:-1] if path.name != "__init__.py" else module.split(".")
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[: len(package_parts) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != PACKAGE:
                continue
            # `from . import x` and `from .pkg import mod` name modules too.
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                found.add(candidate if _module_path(candidate).is_file() else target)
    return {m for m in found if m != PACKAGE and _module_path(m).is_file()}


def script_modules(script: Path) -> list[str]:
    """Every `llgbm` module a script outside the package (a stage) imports, directly or indirectly."""
    return library_modules(*_imported_modules(Path(script), "__main__"))


# The config module imports every component's options and section defaults to validate params.yaml; it is
# a dependency itself, but its imports are not followed: a stage runs a component's code only by
# importing it from its own recipe, and following config would make every stage depend on every module.
CONFIG_MODULE = f"{PACKAGE}.config"


def library_modules(*roots: str) -> list[str]:
    """Every `llgbm` module that the given modules import, directly or through each other, roots included
    (the config module's own imports are not followed; see CONFIG_MODULE)."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        if module != CONFIG_MODULE or module in roots:
            todo.extend(_imported_modules(_module_path(module), module) - seen)
    return sorted(seen)


def module_file(module: str) -> Path:
    """The source file of an `llgbm` module, relative to the repository root (as dvc.yaml lists it)."""
    return _module_path(module).relative_to(PACKAGE_DIR.parent)


def code_fingerprint(*roots: str) -> str:
    """A hash of the sources of `roots` and every library module they import."""
    return sha256_json({str(module_file(m)): sha256_file(_module_path(m)) for m in library_modules(*roots)})


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def machine_description() -> str:
    return f"{platform.platform()}, {os.cpu_count()} CPUs, torch {library_versions()['torch']}"


def changed_keys(saved: dict, current: dict) -> list[str]:
    """The provenance entries on which saved state and the current run disagree."""
    return sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))


def changed_keys_text(saved: dict, current: dict, words: dict[str, str] | None = None) -> str:
    """changed_keys as words for a message ("code" is the library code; `words` names other keys)."""
    names = {"code": "library code", **(words or {})}
    return ", ".join(names.get(k, k) for k in changed_keys(saved, current))
