"""`colr`: CoLR (Nguyen et al., WWW 2024) on the FCF backbone (docs/methods/colr.md).

The item table is W + A B: W global and frozen on the client, B an r x d orthonormal basis (scaled by
sqrt(d / r)) drawn anew every round and shared by all clients, A_u an m x r update each client trains from
zero. The client trains (p_u, A_u) and uploads A_u; the server averages A item by item over the clients
that touched each item and folds the mean into W. Only the rows a client touches move, so A_u lives on
the client's pool rows."""

from __future__ import annotations

import math

import numpy as np
import torch

from fedem.methods.base import Method, MethodContext
from fedem.rng import torch_gen
from fedem.training.backbone import Backbone, ParamSpec
from fedem.training.backbones import fcf_scores
from fedem.training.schedule import RoundSamples
from fedem.training.state import ClientState
from fedem.training.trainer import train_clients


class LowRankFCF(Backbone):
    """sigmoid(<p_u, W_i + A_i B>): p_u and A trained, W rows and the basis B fixed inputs."""

    def __init__(self):
        self.specs = (
            ParamSpec("user"),
            ParamSpec("update", item_rows=True, shared=True),
            ParamSpec("base", item_rows=True, lr_group=None),
            ParamSpec("basis", lr_group=None),
        )

    def logits(self, p):
        rows = p["base"] + torch.bmm(p["update"], p["basis"])  # [C, B, d]
        return torch.bmm(rows, p["user"].unsqueeze(2)).squeeze(2)


def correlated_basis(rank: int, dim: int, seed: int, round_index: int) -> torch.Tensor:
    """B (r x d): the orthonormal factor U V^T of a Gaussian r x d draw, scaled by sqrt(d / r), from
    (seed, round) alone, so every client gets the same one ("orthnorm" of the released server)."""
    g = torch.randn((rank, dim), generator=torch_gen(seed, "colr-basis", round_index), dtype=torch.float64)
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    return ((u @ vh) * math.sqrt(dim / rank)).float()


class CoLR(Method):
    name = "colr"

    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        d, std = ctx.training["latent_dim"], ctx.hparams["init_std"]
        self.rank = ctx.hparams["rank"]
        self.backbone = LowRankFCF()
        self.item_table = (torch.randn((self.num_items, d), generator=torch_gen(ctx.seed, "init-item-table")) * std).to(
            self.device
        )  # W, with every aggregated update folded in
        user = torch.randn((d,), generator=torch_gen(ctx.seed, "init-user-embedding")) * std
        self.state = ClientState.from_template({"user": user}, self.num_users, self.device)

    @property
    def user_emb(self) -> torch.Tensor:
        return self.state["user"]

    def train_round(self, round_index: int, samples: RoundSamples, negatives: np.ndarray) -> torch.Tensor:
        plan = samples.plan()
        d = self.item_table.shape[1]
        basis = correlated_basis(self.rank, d, self.ctx.seed, round_index).to(self.device)
        pool_items = plan.pool_items.to(self.device)
        tensors = {
            **self.state.for_plan(plan, self.backbone),
            "update": torch.zeros((len(pool_items), self.rank), device=self.device),
            "base": self.item_table[pool_items],
            "basis": basis.expand(plan.num_clients, -1, -1),
        }
        losses = train_clients(
            self.backbone,
            plan,
            tensors,
            self.optimizer,
            self.ctx.training["early_stop_threshold"],
            self.ctx.training["kernels"],
        )
        self.state.write_back(plan, self.backbone, {"user": tensors["user"]})
        # item-wise mean of A over the clients that touched each item (every pool row is a touch)
        total = torch.zeros((self.num_items, self.rank), device=self.device).index_add_(
            0, pool_items, tensors["update"]
        )
        touched = torch.zeros(self.num_items, device=self.device).index_add_(
            0, pool_items, torch.ones_like(pool_items, dtype=torch.float32)
        )
        mean_update = total / touched.clamp(min=1).unsqueeze(1)
        self.item_table += mean_update @ basis
        out = torch.empty(self.num_users, dtype=torch.float64, device=self.device)
        out[plan.clients.to(self.device)] = losses
        return out

    def score(self, users, items):
        return fcf_scores(self.user_emb[users], self.item_table[items])

    def score_all(self, users):
        return torch.sigmoid(self.user_emb[users] @ self.item_table.T)
