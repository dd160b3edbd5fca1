"""`local`: every client trains its own FCF (user embedding + item table) alone; no server."""

from __future__ import annotations

import numpy as np
import torch

from fedem.batching import RoundSamples
from fedem.methods.base import Method, MethodContext
from fedem.methods.fcf import fcf_scores, init_fcf, train_fcf_group


class PerClientTables(Method):
    """Shared machinery for methods whose clients keep a private item table [U, I, d]."""

    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        d = ctx.training["latent_dim"]
        items, user = init_fcf(self.num_items, d, ctx.seed)
        self.user_emb = user.to(self.device).expand(self.num_users, d).clone()
        self.tables = items.to(self.device).expand(self.num_users, self.num_items, d).clone()

    def train_plain(self, samples: RoundSamples, lr: float, clients: torch.Tensor | None = None) -> torch.Tensor:
        """Plain FCF local training of `clients` (CPU long tensor; default all) on their own tables;
        returns the losses [U] (NaN for clients that did not train)."""
        tr = self.ctx.training
        out = torch.full((self.num_users,), float("nan"), dtype=torch.float64, device=self.device)
        if clients is not None and not clients.numel():
            return out
        plan = samples.plan(clients)
        d = self.tables.shape[-1]
        ranked = plan.clients.to(self.device)
        flat_rows = ranked[plan.pool_client.to(self.device)] * self.num_items + plan.pool_items.to(self.device)
        table_rows = self.tables.view(-1, d)
        pool = table_rows.index_select(0, flat_rows)
        users = self.user_emb[ranked]
        losses = train_fcf_group(plan, users, pool, lr, self.ctx.adam, tr["early_stop_threshold"],
                                 tr["kernels"])
        table_rows.index_copy_(0, flat_rows, pool)
        self.user_emb[ranked] = users
        out[ranked] = losses
        return out

    def eval_tables(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Item rows [n, K, d] each user is scored with."""
        return self.tables[users.unsqueeze(1), items]

    def eval_full_tables(self, users: torch.Tensor) -> torch.Tensor:
        """Whole item tables [n, I, d] each user is scored with (a view for a range of users)."""
        lo = int(users[0]) if users.numel() else 0
        if users.numel() and int(users[-1]) - lo + 1 == users.numel() and bool((users.diff() == 1).all()):
            return self.tables[lo : lo + users.numel()]
        return self.tables.index_select(0, users)

    def score(self, users, items):
        return fcf_scores(self.user_emb[users], self.eval_tables(users, items))

    def score_all(self, users):
        return fcf_scores(self.user_emb[users], self.eval_full_tables(users))


class Local(PerClientTables):
    name = "local"

    def train_round(self, round_index: int, samples: RoundSamples, negatives: np.ndarray) -> torch.Tensor:
        return self.train_plain(samples, self.ctx.hparams["lr_embedding"])
