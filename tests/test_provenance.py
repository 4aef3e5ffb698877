"""Code fingerprints: which library sources a piece of state depends on."""
from __future__ import annotations

from llgbm.infra import provenance


def test_library_modules_follow_imports_transitively() -> None:
    modules = provenance.library_modules("llgbm.artifacts.delta_cache")
    # delta_cache imports delta, which imports lora, which imports errors: all are part of its definition.
    assert {"llgbm.artifacts.delta_cache", "llgbm.core.delta", "llgbm.core.lora", "llgbm.infra.errors"} <= set(modules)
    assert "llgbm.recipes.train" not in modules and "llgbm.recipes.evaluate" not in modules


def test_config_is_a_dependency_but_its_imports_are_not_followed() -> None:
    # config.py imports every component's options to validate params; a stage that imports config runs
    # only the components its recipe imports.
    modules = provenance.library_modules("llgbm.recipes.tasks")
    assert "llgbm.config" in modules and "llgbm.data.tasks" in modules
    assert "llgbm.core.losses" not in modules and "llgbm.core.generator" not in modules
    assert "llgbm.core.losses" in provenance.library_modules("llgbm.config")  # as a root, it is followed


def test_code_fingerprint_changes_with_any_imported_source(tmp_path, monkeypatch) -> None:
    package = tmp_path / "llgbm"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from .b import f\n")
    (package / "b.py").write_text("def f():\n    return 1\n")
    (package / "c.py").write_text("X = 1\n")
    monkeypatch.setattr(provenance, "PACKAGE_DIR", package)
    assert provenance.library_modules("llgbm.a") == ["llgbm.a", "llgbm.b"]
    before = provenance.code_fingerprint("llgbm.a")
    (package / "c.py").write_text("X = 2\n")  # not imported by a
    assert provenance.code_fingerprint("llgbm.a") == before
    (package / "b.py").write_text("def f():\n    return 2\n")
    assert provenance.code_fingerprint("llgbm.a") != before


def test_library_versions_name_the_numerical_libraries() -> None:
    versions = provenance.library_versions()
    assert {"python", "torch", "transformers", "peft", "accelerate", "safetensors"} <= versions.keys()
