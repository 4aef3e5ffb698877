"""Nearest by cosine: one ranking for the nearest training task of a batch of prompt embeddings (the
evaluation's nearest teacher, the diagnostics' nearest and k nearest teachers) and the nearest of the
training teachers' updates (the diagnostics' weight-space structure)."""
from __future__ import annotations

import torch


def cosine_ranking(query: torch.Tensor, references: dict[str, torch.Tensor]) -> list[tuple[str, float]]:
    """The references by decreasing cosine to the query, each compared as a flat vector, with their cosines
    (ties keep the references' order)."""
    flat = query.reshape(-1)
    scores = {name: float(torch.nn.functional.cosine_similarity(flat, r.reshape(-1), dim=0))
              for name, r in references.items()}
    return sorted(scores.items(), key=lambda kv: -kv[1])


def nearest(query: torch.Tensor, references: dict[str, torch.Tensor]) -> str:
    """The name of the reference most cosine-similar to the query (the first of a tie)."""
    return cosine_ranking(query, references)[0][0]


def max_cosine(target: torch.Tensor, others: list[torch.Tensor]) -> float:
    """The largest cosine of `target` to any of `others`, as flat vectors in float64."""
    return cosine_ranking(target.double(), {str(i): o.double() for i, o in enumerate(others)})[0][1]
