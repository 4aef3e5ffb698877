"""The package's folders are layers: a module imports only from its own layer or those below it, no
recipe imports another, and the whole Config reaches only the recipes and the commands above them."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from llgbm.infra.provenance import PACKAGE_DIR, _imported_modules

# Bottom to top; modules of one rank may import each other (except recipes, see below).
LAYERS = {"infra": 0, "core": 1, "data": 2, "artifacts": 3, "config": 4, "assembly": 4, "testing": 3, "recipes": 5, "study": 5,
          "bench": 6, "gpu_check": 6, "stage": 6, "cli": 6}


def _modules() -> list[str]:
    found = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
        found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return found


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _path(module: str) -> Path:
    path = PACKAGE_DIR.parent.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


@pytest.mark.parametrize("module", [m for m in _modules() if _layer(m)])
def test_no_import_runs_up_a_layer(module: str) -> None:
    rank = LAYERS[_layer(module)]
    upward = sorted(m for m in _imported_modules(_path(module), module) if LAYERS[_layer(m)] > rank)
    assert not upward, f"{module} (layer {_layer(module)}) imports {upward} from above"


@pytest.mark.parametrize("module", [m for m in _modules() if _layer(m) == "recipes"])
def test_no_recipe_imports_another(module: str) -> None:
    others = sorted(m for m in _imported_modules(_path(module), module) if _layer(m) == "recipes")
    assert not others, f"{module} imports the recipes {others}; shared pieces go down a floor"


@pytest.mark.parametrize("module", [m for m in _modules() if _layer(m) and LAYERS[_layer(m)] < LAYERS["config"]])
def test_below_the_recipes_nothing_sees_the_config(module: str) -> None:
    assert "llgbm.config" not in _imported_modules(_path(module), module)


TOP = sorted(name for name, rank in LAYERS.items() if rank == max(LAYERS.values()))
TESTS_DIR = Path(__file__).parent


def _top_layer_imports(test_file: Path) -> set[str]:
    """The top-layer modules (bench, cli, gpu_check, stage) a test file imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(test_file.read_text())):
        names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        found |= {name.split(".")[1] for name in names if name.startswith("llgbm.") and name.split(".")[1] in TOP}
    return found


@pytest.mark.parametrize("test_file", sorted(TESTS_DIR.glob("test_*.py")), ids=lambda p: p.name)
def test_only_a_top_modules_own_tests_import_it(test_file: Path) -> None:
    # Fixtures and reference paths live below (llgbm.testing); a test reaches a command through a
    # subprocess, and imports a top-layer module only to test that module itself (tests/test_<module>.py).
    imported = _top_layer_imports(test_file)
    assert imported <= {test_file.stem.removeprefix("test_")}, f"{test_file.name} imports {sorted(imported)} from the top layer"
