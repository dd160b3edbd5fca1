"""The LDP noise: Laplace draws from explicit generators, and the exact one-draw sum of n of them."""

from __future__ import annotations

import numpy as np
import torch

from fedem.methods.privacy import laplace_noise
from fedem.methods.privacy_sum import laplace_sum
from fedem.rng import numpy_rng, torch_gen


def test_laplace_noise_has_the_laplace_moments_and_is_seeded():
    x = laplace_noise((200_000,), 0.3, torch_gen(0, "t", 1)).double()
    assert abs(float(x.mean())) < 0.005
    assert abs(float(x.var()) - 2 * 0.3**2) < 0.01  # Var Laplace(0, b) = 2 b^2
    assert abs(float(x.abs().mean()) - 0.3) < 0.005  # E|X| = b
    assert torch.equal(x, laplace_noise((200_000,), 0.3, torch_gen(0, "t", 1)).double())


def test_laplace_sum_matches_the_sum_of_n_laplace_draws_in_distribution():
    n, b, size = 7, 0.4, 100_000
    direct = laplace_noise((n, size), b, torch_gen(1, "t", 0)).double().sum(0).numpy()
    fast = laplace_sum((size,), b, n, numpy_rng(1, "t", 0)).numpy()
    for sample in (direct, fast):
        assert abs(sample.mean()) < 0.02
        assert abs(sample.var() / (2 * n * b**2) - 1) < 0.02  # Var = 2 n b^2
    # the shapes agree beyond the variance: the 10/50/90 % quantiles of the two samples
    q = [0.1, 0.5, 0.9]
    np.testing.assert_allclose(np.quantile(fast, q), np.quantile(direct, q), atol=0.03)
