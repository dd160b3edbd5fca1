"""The backbones the methods share: FCF (the FedEM authors' backbone), NCF's MLP tower, and PFedRec's
item-linear score head. Each takes gathered item rows and stacked per-client dense parameters."""

from __future__ import annotations

import math

import torch

from fedem.rng import torch_gen
from fedem.training.backbone import Backbone, ParamSpec, closed_form_covers


def fcf_scores(user_emb: torch.Tensor, item_rows: torch.Tensor) -> torch.Tensor:
    """user_emb [n, d], item_rows [n, K, d] -> sigmoid scores [n, K] (float32, as the authors rank:
    saturated scores tie, and ties count against the positive)."""
    return torch.sigmoid(torch.bmm(item_rows, user_emb.unsqueeze(2)).squeeze(2))


class FCF(Backbone):
    """score = sigmoid(<p_u, q_i>): a private user embedding, an item table (private per client or
    shared through the server, as the method decides)."""

    def __init__(self, items_shared: bool):
        self.specs = (ParamSpec("user"), ParamSpec("items", item_rows=True, shared=items_shared))

    def logits(self, p):
        return torch.bmm(p["items"], p["user"].unsqueeze(2)).squeeze(2)

    def fast_path(self, kernels, device, optimizer, rows, step_groups):
        # the closed form covers one Adam step per batch on (user, items), one lr, no decay of any kind
        if kernels == "autograd" or not closed_form_covers(optimizer, rows, step_groups, (("embedding",),)):
            return None
        from fedem.training.fcf_fast import train_fcf_group

        def fast(plan, tensors, opt, threshold):
            betas = {"beta1": opt.betas[0], "beta2": opt.betas[1], "eps": opt.eps}
            return train_fcf_group(
                plan, tensors["user"], tensors["items"], opt.lrs["embedding"], betas, threshold, kernels
            )

        return fast


def init_fcf(num_items: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The authors' initialisation: one N(0, 1) item table (nn.Embedding default) shared by all
    clients, and one N(0, 1) user-embedding template copied to every client."""
    items = torch.randn((num_items, dim), generator=torch_gen(seed, "init-item-table"))
    user = torch.randn((dim,), generator=torch_gen(seed, "init-user-embedding"))
    return items, user


def init_linear_stack(layers: list[int], seed: int, purpose: str) -> list[torch.Tensor]:
    """nn.Linear's default init for a stack of layers (U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight
    and bias), as [W1, b1, W2, b2, ...]."""
    gen = torch_gen(seed, purpose)
    params = []
    for fan_in, fan_out in zip(layers[:-1], layers[1:]):
        bound = 1.0 / math.sqrt(fan_in)
        params.append((torch.rand((fan_out, fan_in), generator=gen) * 2 - 1) * bound)
        params.append((torch.rand((fan_out,), generator=gen) * 2 - 1) * bound)
    return params


def mlp_forward(params: list[torch.Tensor], h: torch.Tensor, last: str) -> torch.Tensor:
    """A stacked per-client MLP: params [C, out, in] / [C, out], h [C, N, in]; ReLU between layers,
    `last` (identity | sigmoid) at the end."""
    n_layers = len(params) // 2
    for layer in range(n_layers):
        w, b = params[2 * layer], params[2 * layer + 1]
        h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
        if layer < n_layers - 1:
            h = torch.relu(h)
    return torch.sigmoid(h) if last == "sigmoid" else h


class NCF(Backbone):
    """The authors' NCF-style tower: logit = MLP(concat(p_u, q_i)), layers e.g. [2d, 32, 16, 8, 1]
    (ReLU between, the output a logit). The tower and the item table are shared, the user private."""

    def __init__(self, layers: list[int], mlp_shared: bool = True, items_shared: bool = True):
        self.n_layers = len(layers) - 1
        self.mlp_names = tuple(f"mlp.{i // 2}.{'weight' if i % 2 == 0 else 'bias'}" for i in range(2 * self.n_layers))
        self.specs = (
            ParamSpec("user"),
            ParamSpec("items", item_rows=True, shared=items_shared),
            *(ParamSpec(n, shared=mlp_shared, lr_group="mlp") for n in self.mlp_names),
        )

    def logits(self, p):
        q = p["items"]
        h = torch.cat((p["user"].unsqueeze(1).expand(-1, q.shape[1], -1), q), dim=-1)
        return mlp_forward([p[n] for n in self.mlp_names], h, last="identity").squeeze(-1)


class ItemLinear(Backbone):
    """PFedRec's score head: logit = w_u . q_i + b_u, no user embedding; the head is private, the item
    table shared (averaged by the server, fine-tuned by each client)."""

    def __init__(self):
        self.specs = (
            ParamSpec("head.weight", lr_group="head"),
            ParamSpec("head.bias", lr_group="head"),
            ParamSpec("items", item_rows=True, shared=True, lr_group="items"),
        )

    def logits(self, p):
        return torch.bmm(p["items"], p["head.weight"].unsqueeze(2)).squeeze(2) + p["head.bias"]
