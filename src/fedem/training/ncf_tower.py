"""NCF's tower with its first layer split at the concatenation: W1 [p_u; q_i] + b1 = W1_q q_i + (W1_p p_u + b1).

Same function as `backbones.NCF` (equal up to float rounding: the first layer's dot products are summed
in two halves). p_u is one vector per client, so its half of the first layer is one [out] vector per
client instead of a [B, out] product over a broadcast copy, and the [C, B, 2d] concatenation (and its
backward) is never built: the tower's forward and backward take ~30 % less time (benchmarks/bench_ncf.py)."""

from __future__ import annotations

import torch

from fedem.training.backbones import NCF, mlp_forward


def split_first_layer(user: torch.Tensor, items: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    """The tower's logits [C, B] for user [C, d], item rows [C, B, d] and the stacked tower
    params [W1, b1, W2, b2, ...] (W1 [C, out, 2d] reads concat(p_u, q_i))."""
    d = user.shape[-1]
    w1, b1 = params[0], params[1]
    user_part = torch.baddbmm(b1.unsqueeze(2), w1[:, :, :d], user.unsqueeze(2))  # [C, out, 1]
    h = torch.baddbmm(user_part.transpose(1, 2), items, w1[:, :, d:].transpose(1, 2))
    if len(params) == 2:
        return h.squeeze(-1)
    return mlp_forward(params[2:], torch.relu(h), last="identity").squeeze(-1)


class SplitNCF(NCF):
    """`backbones.NCF` (same parameters, specs and initialisation) computed by `split_first_layer`."""

    def logits(self, p):
        return split_first_layer(p["user"], p["items"], [p[n] for n in self.mlp_names])
