"""Functional Adam over stacked per-client tensors, arithmetic as torch.optim.Adam (single tensor).

Every client active at a lockstep step k is at its own step k+1, so bias correction is one scalar;
`mask` freezes clients that stopped early (their rows must not move at all)."""

from __future__ import annotations

import math

import torch


def adam_step_(
    param: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    mask: torch.Tensor | None = None,
) -> None:
    """In place. mask: bool/float broadcastable to param's leading dims, or None (all move)."""
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    bias_correction1 = 1 - beta1**step
    bias_correction2_sqrt = math.sqrt(1 - beta2**step)
    denom = exp_avg_sq.sqrt().div_(bias_correction2_sqrt).add_(eps)
    numer = exp_avg
    if mask is not None:
        numer = exp_avg * mask.reshape(mask.shape + (1,) * (param.dim() - mask.dim())).to(param.dtype)
    param.addcdiv_(numer, denom, value=-lr / bias_correction1)


class StackedAdam:
    """Adam state for a list of stacked parameters whose leading dim is the client (or pool row)."""

    def __init__(self, params: list[torch.Tensor], lr: float, beta1: float, beta2: float, eps: float):
        self.params = params
        self.exp_avg = [torch.zeros_like(p) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in params]
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps

    def step(self, grads: list[torch.Tensor], step: int, prefix: int, mask: torch.Tensor | None = None) -> None:
        """Update the first `prefix` rows of every parameter; `mask` [prefix] freezes rows."""
        for p, g, m, v in zip(self.params, grads, self.exp_avg, self.exp_avg_sq):
            adam_step_(p[:prefix], g, m[:prefix], v[:prefix], step, self.lr, self.beta1, self.beta2, self.eps, mask)
