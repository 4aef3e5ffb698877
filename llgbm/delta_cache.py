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
import os
import time
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import AutoConfig

from .config import Config
from .delta import DeltaComputer, DeltaSpec, binned_log_probs, delta_spec, stack_adapters
from .errors import LlgbmError, first_line
from .io import read_json, sha256_file, sha256_json, temp_file_beside, write_json_atomic
from .lora import ADAPTER_WEIGHTS, load_adapter_tensors, lora_layout, lora_scaling
from .models import autocast_dtype, load_base, load_tokenizer, resolve_mixed_precision
from .probes import AnswerPrompts, ProbeSet, answer_prompts, build_probe_set, generic_length, tokenize_probes
from .provenance import code_fingerprint, library_versions
from .tasks import Task, training_tasks

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


def entry_key(adapter_sha256: str, probes_fingerprint: str, base_fingerprint: str, definition: dict) -> str:
    return sha256_json([adapter_sha256, probes_fingerprint, base_fingerprint, definition])


def _definition_change(old: dict, new: dict) -> str:
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join("library code" if k == "code" else k for k in changed)


def _save_tensors_atomic(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    fd, tmp = temp_file_beside(path)
    os.close(fd)
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


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
                      f"({_definition_change(old_definition, definition)} changed); starting fresh", flush=True)
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
                             f"({_definition_change(self.definition, definition)} differs); rerun the deltas stage")

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
        _save_tensors_atomic(self.root / rel, tensors)
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
        _save_tensors_atomic(self.root / BASE_STATE, {"base_states": base_states.float()})

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


def fill_cache(cfg: Config, tasks: list[Task], base_dir: Path, teachers_dir: Path, cache_dir: Path) -> dict:
    """Compute (or reuse) the delta of every teacher checkpoint; returns the stage's metrics."""
    start = time.perf_counter()
    tokenizer = load_tokenizer(base_dir)
    training = training_tasks(tasks, cfg)
    probes = build_probe_set(cfg.probes, cfg.probe_count, training, generic_length(cfg.tasks), tokenizer)
    model_config = AutoConfig.from_pretrained(str(base_dir))
    layout = lora_layout(model_config, cfg.lora)
    spec = delta_spec(cfg.delta_reduce, cfg.delta_layers, model_config.num_hidden_layers)
    precision = resolve_mixed_precision(cfg.train.mixed_precision)
    answers = answer_prompts(tasks, cfg.kl.prompts, cfg.kl.top_k, cfg.kl.seed)
    cache = DeltaCache.open(cache_dir, probes, base_fingerprint(base_dir), spec.shape(len(probes.texts), model_config.hidden_size),
                            delta_definition(cfg.base.dtype, precision, lora_scaling(cfg.lora), spec, answers))
    checkpoints = read_json(Path(teachers_dir) / "index.json", "teachers index")["checkpoints"]
    for c in checkpoints:
        weights = Path(teachers_dir) / c["path"] / ADAPTER_WEIGHTS
        if not weights.is_file():
            raise LlgbmError(f"{weights}: adapter weights not found; rerun the teachers stage")
        c["adapter_sha256"] = sha256_file(weights)
        c["key"] = cache.key_for(c["adapter_sha256"])
    todo = [c for c in checkpoints if c["key"] not in cache]
    for c in todo:  # a damaged adapter stops the stage before anything is written
        load_adapter_tensors(Path(teachers_dir) / c["path"], layout, cfg.lora)
    cache.begin_writing()
    computer = DeltaComputer(load_base(base_dir, cfg.base.dtype), layout, lora_scaling(cfg.lora),
                             *tokenize_probes(probes, tokenizer), autocast_dtype=autocast_dtype(precision), spec=spec)
    cache.save_base_state(computer.base_states)
    answers.save(Path(cache_dir) / ANSWERS)
    answer_ids, answer_mask = answers.batch([c["task"] for c in todo], tokenizer) if todo else (None, None)
    per_batch = cfg.deltas.adapters_per_batch
    device = computer.probe_ids.device
    for first in range(0, len(todo), per_batch):
        chunk = todo[first : first + per_batch]
        tensors = [load_adapter_tensors(Path(teachers_dir) / c["path"], layout, cfg.lora) for c in chunk]
        batch = {k: (a.to(device), b.to(device)) for k, (a, b) in stack_adapters(tensors).items()}
        ids, mask = answer_ids[first : first + per_batch], answer_mask[first : first + per_batch]
        with torch.no_grad():
            deltas = computer(batch).cpu()
            kl_log_probs = computer.answer_log_probs(batch, ids, mask).cpu()
        for c, delta, log_probs in zip(chunk, deltas, kl_log_probs):
            top_ids = log_probs.topk(answers.top_k, dim=-1).indices if answers.top_k else None
            target = log_probs if top_ids is None else binned_log_probs(log_probs, top_ids)
            cache.put(c["key"], delta, target, top_ids, {"task": c["task"], "step": c["step"], "adapter": c["path"],
                                                         "adapter_sha256": c["adapter_sha256"]})
        cache.flush()
    cache.prune({c["key"] for c in checkpoints})
    deltas = torch.stack([cache.get(c["key"]) for c in checkpoints])
    return {"checkpoints": len(checkpoints), "computed": len(todo), "reused": len(checkpoints) - len(todo),
            "probes": len(probes.texts), "seconds": time.perf_counter() - start,
            **delta_geometry(deltas, [c["task"] for c in checkpoints])}


def delta_geometry(deltas: torch.Tensor, tasks: list[str]) -> dict:
    """Mean delta norm, and mean cosine between checkpoints of the same task vs of different tasks: the
    deltas say something about behaviour only if the first clearly exceeds the second."""
    deltas = deltas.flatten(1)
    unit = torch.nn.functional.normalize(deltas, dim=-1)
    cosine = unit @ unit.T
    same = torch.tensor([[a == b for b in tasks] for a in tasks])
    off_diagonal = ~torch.eye(len(tasks), dtype=torch.bool)
    within, between = cosine[same & off_diagonal], cosine[~same]
    return {"delta_norm_mean": deltas.norm(dim=-1).mean().item(),
            "cosine_within_task": within.mean().item() if within.numel() else float("nan"),
            "cosine_between_tasks": between.mean().item() if between.numel() else float("nan")}
