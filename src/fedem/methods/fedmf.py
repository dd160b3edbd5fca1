"""`fedmf`: FCF with one shared item table, FedAvg-aggregated (sample-weighted) every round;
each user embedding stays private. Only the rows a client touched can differ from the table it
received, so the average is a weighted scatter-add of the pool rows' changes."""

from __future__ import annotations

import numpy as np
import torch

from fedem.batching import RoundSamples
from fedem.methods.base import Method, MethodContext
from fedem.methods.fcf import fcf_scores, init_fcf, train_fcf_group


class FedMF(Method):
    name = "fedmf"

    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        d = ctx.training["latent_dim"]
        items, user = init_fcf(self.num_items, d, ctx.seed)
        self.item_table = items.to(self.device)
        self.user_emb = user.to(self.device).expand(self.num_users, d).clone()

    def train_round(self, round_index: int, samples: RoundSamples, negatives: np.ndarray) -> torch.Tensor:
        tr = self.ctx.training
        plan = samples.plan()
        ranked = plan.clients.to(self.device)
        pool_items = plan.pool_items.to(self.device)
        received = self.item_table[pool_items]
        pool = received.clone()
        users = self.user_emb[ranked]
        losses = train_fcf_group(plan, users, pool, self.ctx.hparams["lr_embedding"], self.ctx.adam,
                                 tr["early_stop_threshold"], tr["kernels"])
        self.user_emb[ranked] = users
        # FedAvg: sum_u w_u T_u = G + sum_u w_u (T_u - G), nonzero only on each client's pool rows
        n = plan.sample_counts.to(self.device, torch.float32)
        weights = (n / n.sum())[plan.pool_client.to(self.device)]
        self.item_table.index_add_(0, pool_items, weights.unsqueeze(1) * (pool - received))
        out = torch.empty(self.num_users, dtype=torch.float64, device=self.device)
        out[ranked] = losses
        return out

    def score(self, users, items):
        return fcf_scores(self.user_emb[users], self.item_table[items])

    def score_all(self, users):
        return torch.sigmoid(self.user_emb[users] @ self.item_table.T)
