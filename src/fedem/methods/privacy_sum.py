"""The exact sum of many clients' Laplace noise tables in one draw (Table 4, for servers that average
every client's whole noisy upload, such as PFedRec's). Apart from `fedem.methods.privacy` so that the
methods using only the per-upload draws keep their training-code hash."""

from __future__ import annotations

import numpy as np
import torch


def laplace_sum(shape: tuple[int, ...], scale: float, n: int, rng: np.random.Generator) -> torch.Tensor:
    """The sum of n i.i.d. Laplace(0, scale) tensors, drawn exactly in O(size) instead of O(n size):
    sum_u scale (E1_u - E2_u) = scale (G1 - G2) with G1, G2 ~ Gamma(n, 1) (a sum of n Exp(1) is Gamma(n, 1))."""
    return torch.from_numpy(scale * (rng.gamma(n, 1.0, size=shape) - rng.gamma(n, 1.0, size=shape)))
