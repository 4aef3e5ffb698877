"""LoRA weights as fixed-size tokens (after DnD), derived from the layout.

Each A (r x in) and each B transposed (r x out) is cut along its feature axis into chunks of
`chunk_width` columns; a chunk (r x chunk_width, the last one padded) is one token of size
r * chunk_width. Each token is normalised by the mean and std of its own valid entries, and the
scales (mean, log std) are kept, so detokenising is exact and differentiable. Padding is marked by a
mask and is zero in every token; losses must weight by the mask.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from llgbm.core.lora import LoraSlot

STD_EPS = 1e-8


@dataclass(frozen=True)
class TokenSpan:
    slot: int  # index into the layout
    part: str  # "A" or "B" (B is tokenised transposed: r x out)
    first_token: int
    n_tokens: int
    width: int  # columns of the r x width matrix this span covers (in for A, out for B)


def standardise(raw: torch.Tensor, mask: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each token (..., T, D) minus the mean of its real entries (`mask`), over their std + eps, padding
    zero; with that mean and std (..., T). The targets' form, and the generator's (core.generator)."""
    weight = mask.to(raw.dtype)
    count = weight.sum(-1)
    mean = (raw * weight).sum(-1) / count
    centred = (raw - mean.unsqueeze(-1)) * weight
    std = (centred.square().sum(-1) / count).sqrt()
    return centred / (std + eps).unsqueeze(-1), mean, std


def token_mask(token_columns: Sequence[int], token_dim: int, chunk_width: int) -> torch.Tensor:
    """(T, D) bool: True where a token entry is a real weight. A token is rank x chunk_width entries,
    row-major (D = rank * chunk_width), of which each row's first token_columns[t] are real, the rest
    padding. The weight tokenizer's mask, and the generator's (core.generator), which knows only its shape."""
    columns = torch.arange(token_dim) % chunk_width
    return columns[None, :] < torch.tensor(list(token_columns))[:, None]


class WeightTokenizer:
    def __init__(self, layout: list[LoraSlot], chunk_width: int):
        ranks = {s.rank for s in layout}
        if len(ranks) != 1:
            raise ValueError(f"one rank per layout expected, got {sorted(ranks)}")
        self.layout = layout
        self.rank = ranks.pop()
        self.chunk_width = chunk_width
        self.token_dim = self.rank * chunk_width
        spans, first = [], 0
        for index, slot in enumerate(layout):
            for part, width in (("A", slot.in_features), ("B", slot.out_features)):
                n = math.ceil(width / chunk_width)
                spans.append(TokenSpan(index, part, first, n, width))
                first += n
        self.spans = spans
        self.num_tokens = first
        self.mask = token_mask(self.token_columns(), self.token_dim, chunk_width)  # True where an entry is a real weight
        # Where each real weight sits in the flattened (T * D) token grid, in layout order: A (r x in) then
        # B transposed (r x out) of each slot, row-major. Detokenising is one gather and free views.
        positions = torch.arange(self.num_tokens * self.token_dim).view(self.num_tokens, self.rank, chunk_width)
        gather = []
        for span in spans:
            block = positions[span.first_token : span.first_token + span.n_tokens]  # (n, r, w)
            gather.append(block.transpose(0, 1).reshape(self.rank, -1)[:, : span.width].reshape(-1))
        self._gather = torch.cat(gather)
        self._sizes = [self.rank * span.width for span in spans]

    def token_columns(self) -> list[int]:
        """Per token, how many of its chunk_width columns are real weights (the rest is padding)."""
        out = []
        for span in self.spans:
            out += [self.chunk_width] * (span.n_tokens - 1) + [span.width - (span.n_tokens - 1) * self.chunk_width]
        return out

    def token_roles(self) -> list[int]:
        """Per token, its role: the index of (module, A or B) in order of first appearance, e.g. every
        layer's q_proj A chunks share one role. Generators give each role its own head."""
        roles: dict[tuple[str, str], int] = {}
        out = []
        for span in self.spans:
            role = roles.setdefault((self.layout[span.slot].module, span.part), len(roles))
            out += [role] * span.n_tokens
        return out

    def _raw_tokens(self, tensors: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        pieces = []
        for span in self.spans:
            slot = self.layout[span.slot]
            a, b = tensors[slot.name]
            matrix = a if span.part == "A" else b.transpose(-1, -2)  # (..., r, width)
            padded = torch.nn.functional.pad(matrix, (0, span.n_tokens * self.chunk_width - span.width))
            chunks = padded.unflatten(-1, (span.n_tokens, self.chunk_width)).transpose(-3, -2)  # (..., n, r, w)
            pieces.append(chunks.flatten(-2))
        return torch.cat(pieces, dim=-2)

    def tokenize(self, tensors: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        """{slot: (A, B)} with optional leading batch dims -> tokens (..., T, D) and scales (..., T, 2)."""
        raw = self._raw_tokens(tensors)
        tokens, mean, std = standardise(raw, self.mask.to(raw.device), STD_EPS)
        return tokens, torch.stack([mean, torch.log(std + STD_EPS)], dim=-1)

    def detokenize(self, tokens: torch.Tensor, scales: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Inverse of tokenize, differentiable in tokens and scales; padding entries are ignored."""
        raw = tokens * torch.exp(scales[..., 1:2]) + scales[..., 0:1]
        lead = raw.shape[:-2]
        flat = raw.reshape(*lead, -1).index_select(-1, self._gather.to(raw.device))
        parts = flat.split(self._sizes, dim=-1)
        out: dict[str, list[torch.Tensor]] = {}
        for span, part in zip(self.spans, parts):
            matrix = part.unflatten(-1, (self.rank, span.width))
            out.setdefault(self.layout[span.slot].name, []).append(matrix if span.part == "A" else matrix.transpose(-1, -2))
        return {name: (a, b) for name, (a, b) in out.items()}
