"""The delta cache: one safetensors file per (adapter content, probe set, base model, delta definition),
a JSON manifest, and the probe set itself so training measures deltas on exactly the same probes.

The delta definition is everything else a delta depends on: the library code that computes it, the
libraries it runs on, the base model's dtype and the LoRA scaling. Entries made under another
definition are never reused: the cache starts fresh and says so.

Entries are written atomically (temporary file, then rename; manifest rewritten after each batch), so a
killed run leaves only complete entries and a rerun reuses every valid one.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import PreTrainedTokenizerBase

from llgbm.core.delta import DeltaSpec
from llgbm.data.probes import AnswerPrompts, ProbeSet, tokenize_probes
from llgbm.infra.errors import LlgbmError, first_line
from llgbm.infra.io import read_json, sha256_file, sha256_json, write_atomic, write_json_atomic
from llgbm.infra.provenance import changed_keys_text, code_fingerprint, library_versions

MANIFEST = "manifest.json"
PROBES = "probes.json"
BASE_STATE = "base_state.safetensors"
ANSWERS = "answer_prompts.json"  # the KL reference's prompts per task
FORMAT = 4


def delta_definition(dtype: str, precision: str, scaling: float, spec: DeltaSpec, answers: AnswerPrompts) -> dict:
    """What a cached entry means beyond its adapter, probes and base model. `precision` is the resolved
    train.mixed_precision: the cache is computed in training's precision, so a teacher's own weights give
    L_delta = 0 in training on every device. `spec` is the delta variant (reduction, layers); `answers`
    the prompts and top-k of the KL reference's targets."""
    return {"format": FORMAT, "code": code_fingerprint(__name__), "libraries": library_versions(),
            "dtype": dtype, "precision": precision, "scaling": scaling, "variant": spec.identity(),
            "kl": answers.fingerprint()}


# A definition's keys in a message's words: "kl" is no param but the KL reference's prompts, drawn from the
# tasks' records, so an edited task file changes it with every `kl` param as it was (issue 35).
DEFINITION_WORDS = {"kl": "the KL reference's prompts (drawn from the tasks' records) or kl params",
                    "variant": "the delta variant (delta_reduce, delta_layers)", "scaling": "the LoRA scaling",
                    "dtype": "base.dtype", "precision": "train.mixed_precision"}


def entry_key(adapter_sha256: str, probes_fingerprint: str, base_fingerprint: str, definition: dict) -> str:
    return sha256_json([adapter_sha256, probes_fingerprint, base_fingerprint, definition])


def _write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    write_atomic(path, lambda tmp: save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp))


class DeltaCache:
    def __init__(self, root: Path, probes: ProbeSet, base_fingerprint: str, delta_shape: tuple[int, ...],
                 definition: dict):
        self.root = Path(root)
        self.probes = probes
        self.base_fingerprint = base_fingerprint
        self.delta_shape = tuple(delta_shape)
        self.definition = definition
        self.entries: dict[str, dict] = {}

    @classmethod
    def open(cls, root: Path, probes: ProbeSet, base_fingerprint: str, delta_shape: tuple[int, ...],
             definition: dict) -> "DeltaCache":
        """Open for writing (nothing is written before `begin_writing`): keep the entries that are valid for
        these probes, this base model and this delta definition; anything else is recomputed (and pruned
        once the new entries are in)."""
        cache = cls(root, probes, base_fingerprint, delta_shape, definition)
        manifest_path = cache.root / MANIFEST
        if manifest_path.is_file():
            try:
                manifest = read_json(manifest_path, "delta cache manifest")
            except LlgbmError:
                manifest = {}
            old_definition = manifest.get("definition") if isinstance(manifest.get("definition"), dict) else {}
            if old_definition != definition:
                print(f"{cache.root}: cached deltas were computed under another definition "
                      f"({changed_keys_text(old_definition, definition, DEFINITION_WORDS)} changed); starting fresh", flush=True)
            elif (manifest.get("probes_fingerprint") == probes.fingerprint()
                    and manifest.get("base_fingerprint") == base_fingerprint
                    and isinstance(manifest.get("entries"), dict)):
                cache.entries = {k: v for k, v in manifest["entries"].items() if cache._valid(k, v)}
        return cache

    def begin_writing(self) -> None:
        """The first write: the entries directory, no leftovers of a killed run, the probe set."""
        (self.root / "entries").mkdir(parents=True, exist_ok=True)
        for stale in self.root.rglob(".*.tmp"):
            stale.unlink()
        write_json_atomic(self.root / PROBES, self.probes.identity())

    @classmethod
    def load(cls, root: Path) -> "DeltaCache":
        """Open for reading, as training and evaluation do."""
        root = Path(root)
        manifest = read_json(root / MANIFEST, "delta cache manifest")
        probes_path = root / PROBES
        try:
            probes = ProbeSet.from_identity(read_json(probes_path, "delta cache probes"))
            if probes.fingerprint() != manifest.get("probes_fingerprint"):
                raise LlgbmError(f"{probes_path}: probe set does not match the manifest's fingerprint")
            cache = cls(root, probes, manifest["base_fingerprint"], tuple(manifest["delta_shape"]),
                        manifest["definition"])
            cache.entries = dict(manifest["entries"])
        except (KeyError, TypeError, AttributeError) as exc:
            raise LlgbmError(f"{root / MANIFEST}: malformed delta cache ({exc!r}); rerun the deltas stage") from None
        return cache

    def check_definition(self, definition: dict) -> None:
        """Refuse deltas computed by other code, libraries, dtype or scaling than the caller's."""
        if self.definition != definition:
            raise LlgbmError(f"{self.root}: deltas were computed under another definition "
                             f"({changed_keys_text(self.definition, definition, DEFINITION_WORDS)} differs); rerun the deltas stage")

    def _valid(self, key: str, entry: dict) -> bool:
        try:
            self._read(key, entry)
        except LlgbmError:
            return False
        return True

    def _read(self, key: str, entry: dict) -> dict[str, torch.Tensor]:
        """An entry's tensors, checked: the delta's shape, the KL target, all finite."""
        path = self.root / str(entry.get("file"))
        try:
            # Copies: safetensors may map the file, and the tensors must not change if the file does.
            tensors = {k: v.clone() for k, v in load_file(str(path)).items()}
        except (SafetensorError, OSError, ValueError) as exc:
            raise LlgbmError(f"{path}: unreadable delta cache entry ({first_line(exc)}); rerun the deltas stage") from None
        if (tuple(tensors.get("delta", torch.empty(0)).shape) != self.delta_shape or "kl_log_probs" not in tensors
                or not all(torch.isfinite(v.float()).all() for v in tensors.values())):
            raise LlgbmError(f"{path}: delta cache entry of another shape, incomplete or with NaN/Inf; rerun the "
                             "deltas stage")
        return tensors

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def key_for(self, adapter_sha256: str) -> str:
        return entry_key(adapter_sha256, self.probes.fingerprint(), self.base_fingerprint, self.definition)

    def put(self, key: str, delta: torch.Tensor, kl_log_probs: torch.Tensor, kl_top_ids: torch.Tensor | None,
            meta: dict) -> None:
        """An adapter's delta and its answer distributions (KL target: (K, vocab), or (K, k + 1) bins
        with the top-k token ids)."""
        if tuple(delta.shape) != self.delta_shape or not torch.isfinite(delta).all() or not torch.isfinite(kl_log_probs).all():
            raise LlgbmError(f"delta cache: refusing a delta of shape {tuple(delta.shape)} or with NaN/Inf for {meta}")
        rel = f"entries/{key}.safetensors"
        tensors = {"delta": delta.float(), "kl_log_probs": kl_log_probs.float()}
        if kl_top_ids is not None:
            tensors["kl_top_ids"] = kl_top_ids
        _write_tensors(self.root / rel, tensors)
        self.entries[key] = {**meta, "file": rel}

    def _entry(self, key: str) -> dict[str, torch.Tensor]:
        if key not in self.entries:
            raise LlgbmError(f"{self.root}: no delta for key {key[:12]}; rerun the deltas stage")
        return self._read(key, self.entries[key])

    def get(self, key: str) -> torch.Tensor:
        return self._entry(key)["delta"]

    def get_kl(self, key: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The teacher's answer log-distributions and, with kl.top_k, the ids of their top-k bins."""
        tensors = self._entry(key)
        return tensors["kl_log_probs"], tensors.get("kl_top_ids")

    def save_base_state(self, base_states: torch.Tensor) -> None:
        """The base model's probe states (P, layers, hidden) that every delta is taken against."""
        _write_tensors(self.root / BASE_STATE, {"base_states": base_states.float()})

    def flush(self) -> None:
        write_json_atomic(self.root / MANIFEST, {
            "definition": self.definition, "probes_fingerprint": self.probes.fingerprint(),
            "base_fingerprint": self.base_fingerprint, "delta_shape": list(self.delta_shape), "entries": self.entries,
        })

    def prune(self, keep: set[str]) -> None:
        """Drop entries (and files) that no current adapter refers to."""
        for key in [k for k in self.entries if k not in keep]:
            with contextlib.suppress(FileNotFoundError):
                (self.root / self.entries.pop(key)["file"]).unlink()
        referenced = {self.root / e["file"] for e in self.entries.values()}
        for path in (self.root / "entries").glob("*.safetensors"):
            if path not in referenced:
                path.unlink()
        self.flush()


def base_fingerprint(base_dir: Path) -> str:
    files = sorted(Path(base_dir).glob("*.safetensors")) + [Path(base_dir) / "config.json"]
    return sha256_json([[f.name, sha256_file(f)] for f in files])


def checked_probe_batch(cache: "DeltaCache", expected: ProbeSet, tokenizer: PreTrainedTokenizerBase,
                        base_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The cache's own probes, tokenised; any disagreement with the probe set params define (`expected`)
    or with the base model is an error."""
    if expected != cache.probes:
        raise LlgbmError(f"{cache.root}: its probe set differs from the one params.yaml defines; rerun the deltas stage")
    if base_fingerprint(base_dir) != cache.base_fingerprint:
        raise LlgbmError(f"{cache.root}: computed on another base model; rerun the deltas stage")
    return tokenize_probes(cache.probes, tokenizer)
