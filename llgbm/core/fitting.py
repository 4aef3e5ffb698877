"""Linear fits of the diagnostics: a ridge read-out (prompt embeddings -> labels) and the least-squares share
of one update explained by others. Float64 in, float64 out, as the callers pass them."""
from __future__ import annotations

import torch


def _with_bias(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], 1)


def ridge_fit(x: torch.Tensor, y: torch.Tensor, penalty: float) -> torch.Tensor:
    """W minimising ||[x 1] W - y||^2 + penalty ||W||^2 (the bias row penalised too, for simplicity): x (n, d),
    y (n, k) -> W (d + 1, k), the bias last."""
    design = _with_bias(x)
    gram = design.T @ design + penalty * torch.eye(design.shape[1], dtype=x.dtype)
    return torch.linalg.solve(gram, design.T @ y)


def ridge_predict(weights: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """[x 1] W: the predictions (n, k) of a ridge_fit's weights."""
    return _with_bias(x) @ weights


def lstsq_r2(target: torch.Tensor, basis: list[torch.Tensor]) -> float:
    """Uncentred R^2 of the least-squares fit of `target` by a linear combination of `basis` (each flattened;
    in float64): 1 - ||residual||^2 / ||target||^2."""
    design = torch.stack([b.reshape(-1) for b in basis], 1).double()
    y = target.reshape(-1, 1).double()
    coefficients = torch.linalg.lstsq(design, y, driver="gelsd").solution
    residual = y - design @ coefficients
    return 1.0 - float(residual.square().sum() / y.square().sum())
