"""The diagnostics' linear fits, on cases solved by hand."""
import pytest
import torch

from llgbm.core.fitting import lstsq_r2, ridge_fit, ridge_predict


def test_lstsq_r2_is_exact() -> None:
    e1, e2, e3 = torch.eye(3)
    assert lstsq_r2(2 * e1 - e2, [e1, e2]) == pytest.approx(1.0)
    assert lstsq_r2(e3, [e1, e2]) == pytest.approx(0.0)
    assert lstsq_r2(e1 + e3, [e1, e2]) == pytest.approx(0.5)
    assert lstsq_r2(torch.tensor([[1.0, 1.0], [0.0, 0.0]]), [torch.tensor([[1.0, 0.0], [0.0, 0.0]])]) == pytest.approx(0.5)


def test_ridge_fit_on_a_hand_made_case() -> None:
    # One feature, two points: design [[x 1]] = [[0, 1], [1, 1]], y = [1, 3]. Without a penalty, the exact
    # line y = 2x + 1; with penalty p, W = (D^T D + p I)^-1 D^T y, D^T D = [[1, 1], [1, 2]], D^T y = [3, 4].
    x = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    y = torch.tensor([[1.0], [3.0]], dtype=torch.float64)
    torch.testing.assert_close(ridge_fit(x, y, 0.0), torch.tensor([[2.0], [1.0]], dtype=torch.float64))
    # p = 1: [[2, 1], [1, 3]] W = [3, 4] -> W = [1, 1] (2 + 1 = 3, 1 + 3 = 4).
    weights = ridge_fit(x, y, 1.0)
    torch.testing.assert_close(weights, torch.tensor([[1.0], [1.0]], dtype=torch.float64))
    torch.testing.assert_close(ridge_predict(weights, torch.tensor([[2.0]], dtype=torch.float64)),
                               torch.tensor([[3.0]], dtype=torch.float64))
