"""The batched simplex projection equals the authors' per-row QP, solved by cvxpy."""

import cvxpy as cp
import numpy as np
import torch

from fedem.numerics.simplex import project_rows_to_simplex


def qp(p, s, alpha):
    x = cp.Variable(len(p))
    cp.Problem(cp.Minimize(cp.sum_squares(x) + (2 * alpha * (-s) - 2 * p) @ x), [x >= 0, cp.sum(x) == 1]).solve(
        solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12
    )
    return x.value


def test_projection_matches_qp_on_random_instances():
    rng = np.random.default_rng(0)
    for _trial in range(40):
        n = int(rng.integers(2, 30))
        p = rng.dirichlet(np.ones(n))
        sim = rng.uniform(0, 1, size=(n, n))
        sim[sim > 0.9] = 1
        np.fill_diagonal(sim, 1)
        alpha = float(rng.choice([0.0, 0.1, 0.9, 5.0]))
        mine = project_rows_to_simplex(torch.from_numpy(p[None, :] + alpha * sim)).numpy()
        for i in range(n):
            np.testing.assert_allclose(mine[i], qp(p, sim[i], alpha), atol=1e-6)
        assert np.allclose(mine.sum(1), 1) and (mine >= 0).all()


def test_projection_of_a_simplex_point_is_itself_and_ties_are_handled():
    v = torch.tensor([[0.2, 0.3, 0.5], [1.0, 1.0, 1.0], [5.0, -1.0, -2.0]], dtype=torch.float64)
    out = project_rows_to_simplex(v)
    torch.testing.assert_close(out[0], v[0])
    torch.testing.assert_close(out[1], torch.full((3,), 1 / 3, dtype=torch.float64))
    torch.testing.assert_close(out[2], torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
