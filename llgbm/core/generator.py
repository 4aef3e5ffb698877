"""The prompt-conditioned LoRA generator (after DnD's hyper-convolutional decoder).

Condition: embeddings of N prompts of one task, (batch, N, E). Each is projected to a feature axis of
width F; convolutions along the feature axis treat the prompt axis as channels and grow it into the
token axis (N -> c1 -> ... -> T); a head shared by all tokens squeezes each token's F features into
the token grid (D values plus the token's two scales), plus a learned per-token offset.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn


@dataclass
class GeneratorConfig:
    chunk_width: int = 64  # weight-token width; token size = lora.rank * chunk_width
    prompts_per_sample: int = 8  # N prompts of one task condition one generated adapter
    feature_dim: int = 256  # each prompt embedding is projected to this feature axis
    channels: list[int] = field(default_factory=lambda: [32, 64])  # conv channels, prompt axis -> tokens


@dataclass(frozen=True)
class GeneratorShape:
    prompts: int  # N
    embed_dim: int  # E
    feature_dim: int  # F
    channels: tuple[int, ...]
    num_tokens: int  # T
    token_dim: int  # D

    def to_dict(self) -> dict:
        return {**asdict(self), "channels": list(self.channels)}

    @classmethod
    def from_dict(cls, raw: dict) -> "GeneratorShape":
        return cls(**{**raw, "channels": tuple(raw["channels"])})

    def check(self) -> None:
        """Positive integer sizes, or a ValueError naming the first bad one."""
        for name, value in asdict(self).items():
            values = value if isinstance(value, (list, tuple)) else [value]
            if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
                raise ValueError(f"'{name}' is {value!r}, expected positive integers")


def generator_shape(cfg: GeneratorConfig, embed_dim: int, num_tokens: int, token_dim: int) -> GeneratorShape:
    return GeneratorShape(cfg.prompts_per_sample, embed_dim, cfg.feature_dim, tuple(cfg.channels), num_tokens, token_dim)


class LoraGenerator(nn.Module):
    def __init__(self, shape: GeneratorShape):
        super().__init__()
        self.shape = shape
        self.project = nn.Sequential(nn.LayerNorm(shape.embed_dim), nn.Linear(shape.embed_dim, shape.feature_dim), nn.SiLU())
        widths = [shape.prompts, *shape.channels]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Conv1d(c_in, c_out, kernel_size=3, padding=1), nn.GroupNorm(1, c_out), nn.SiLU()]
        layers.append(nn.Conv1d(widths[-1], shape.num_tokens, kernel_size=3, padding=1))
        self.grow = nn.Sequential(*layers)
        self.head = nn.Linear(shape.feature_dim, shape.token_dim + 2)
        self.token_offset = nn.Parameter(torch.zeros(shape.num_tokens, shape.token_dim + 2))

    def forward(self, condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """condition (batch, N, E) -> normalised tokens (batch, T, D) and scales (batch, T, 2)."""
        features = self.grow(self.project(condition))  # (batch, T, F)
        out = self.head(features) + self.token_offset
        return out[..., : self.shape.token_dim], out[..., self.shape.token_dim :]
