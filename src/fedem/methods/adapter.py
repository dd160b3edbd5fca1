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


def merged_forward_backward(
    params: list[torch.Tensor],
    local: torch.Tensor,
    global_: torch.Tensor,
    user: torch.Tensor,
    labels: torch.Tensor,
    valid: torch.Tensor,
    count: torch.Tensor,
    want: str,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Loss and closed-form gradients of FCF scored on merged rows, for a batch of clients.

    local/global_ [C, B, d], user [C, d]. want='adapter' -> grads of params (step (a));
    want='embeddings' -> [grad wrt the local rows [C, B, d], grad wrt user [C, d]] (step (b)).
    Gradients reach the local rows through both (1 - rho) and the adapter's input, exactly as
    autograd does for the authors' module (checked against it in the tests)."""
    from fedem.numerics.bce import bce_forward_backward

    delta = global_ - local
    x = torch.cat((local, delta), dim=-1)
    n_layers = len(params) // 2
    inputs, pre = [x], []
    h = x
    for layer in range(n_layers):
        w, b = params[2 * layer], params[2 * layer + 1]
        z = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
        pre.append(z)
        h = torch.relu(z) if layer < n_layers - 1 else torch.sigmoid(z)
        inputs.append(h)
    rho = h  # [C, B, 1]
    merged = local + rho * delta
    logits = torch.bmm(merged, user.unsqueeze(2)).squeeze(2)
    _, loss, g_logit = bce_forward_backward(logits, labels, valid, count)
    d_merged = g_logit.unsqueeze(-1) * user.unsqueeze(1)
    d_z = (d_merged * delta).sum(-1, keepdim=True) * rho * (1 - rho)  # through the sigmoid
    grads_params: list[torch.Tensor] = [None] * len(params)  # type: ignore[list-item]
    for layer in reversed(range(n_layers)):
        w = params[2 * layer]
        if want == "adapter":
            grads_params[2 * layer] = torch.bmm(d_z.transpose(1, 2), inputs[layer])
            grads_params[2 * layer + 1] = d_z.sum(1)
        d_h = torch.bmm(d_z, w)
        if layer > 0:
            d_z = d_h * (pre[layer - 1] > 0)
    if want == "adapter":
        return loss, grads_params
    d = local.shape[-1]
    d_local = d_merged * (1 - rho) + d_h[..., :d] - d_h[..., d:]
    d_user = torch.bmm(g_logit.unsqueeze(1), merged).squeeze(1)
    return loss, [d_local, d_user]
