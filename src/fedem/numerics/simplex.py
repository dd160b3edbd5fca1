"""Euclidean projection onto the probability simplex, batched over rows (sort-based, exact)."""

from __future__ import annotations

import torch


def project_rows_to_simplex(v: torch.Tensor) -> torch.Tensor:
    """argmin_x ||x - v_i||^2 s.t. x >= 0, sum x = 1, for every row v_i of v [n, m].
    This is the exact solution of the authors' per-row QP  min x'x + (2a(-s) - 2p)'x  with
    v = p + a s (Held et al. 1974; Duchi et al. 2008)."""
    n, m = v.shape
    u, _ = torch.sort(v, dim=1, descending=True)
    css = torch.cumsum(u, dim=1) - 1
    idx = torch.arange(1, m + 1, device=v.device, dtype=v.dtype)
    cond = u - css / idx > 0
    # the condition holds on a prefix of the sorted entries; rho is its last index
    rho = (cond * torch.arange(m, device=v.device)).max(1, keepdim=True).values
    theta = css.gather(1, rho) / (rho + 1).to(v.dtype)
    return torch.clamp(v - theta, min=0)
