"""FedEM's elastic-merging adapter, batched over clients: an MLP per client maps
concat(L[i], G[i] - L[i]) to rho_i in (0, 1); merged row = L[i] + rho_i (G[i] - L[i])."""

from __future__ import annotations

import math

import torch

from fedem.rng import torch_gen


def init_adapter(layers: list[int], seed: int) -> list[torch.Tensor]:
    """One template (nn.Linear's default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and
    bias), as [W1, b1, W2, b2, ...]; every client starts from it."""
    gen = torch_gen(seed, "init-adapter")
    params = []
    for fan_in, fan_out in zip(layers[:-1], layers[1:]):
        bound = 1.0 / math.sqrt(fan_in)
        params.append((torch.rand((fan_out, fan_in), generator=gen) * 2 - 1) * bound)
        params.append((torch.rand((fan_out,), generator=gen) * 2 - 1) * bound)
    return params


def adapter_rho(params: list[torch.Tensor], local: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """params: stacked [C, out, in] / [C, out]; local, delta [C, N, d] -> rho [C, N, 1]."""
    h = torch.cat((local, delta), dim=-1)
    n_layers = len(params) // 2
    for layer in range(n_layers):
        w, b = params[2 * layer], params[2 * layer + 1]
        h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
        h = torch.relu(h) if layer < n_layers - 1 else torch.sigmoid(h)
    return h


def merge(params: list[torch.Tensor], local: torch.Tensor, global_: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Merged rows and rho: local + rho (global - local)."""
    delta = global_ - local
    rho = adapter_rho(params, local, delta)
    return local + rho * delta, rho
