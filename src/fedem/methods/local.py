"""`local`: every client trains its own FCF (user embedding + item table) alone; no server."""

from __future__ import annotations

import numpy as np
import torch

from fedem.methods.base import Method, MethodContext
from fedem.training.backbones import FCF, fcf_scores, init_fcf
from fedem.training.schedule import RoundSamples
from fedem.training.state import ClientState
from fedem.training.trainer import train_clients


class PerClientTables(Method):
    """Shared machinery for methods whose clients keep a private item table [U, I, d]."""

    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        items, user = init_fcf(self.num_items, ctx.training["latent_dim"], ctx.seed)
        self.backbone = FCF(items_shared=False)
        self.state = ClientState.from_template({"user": user, "items": items}, self.num_users, self.device)

    @property
    def user_emb(self) -> torch.Tensor:
        return self.state["user"]

    @property
    def tables(self) -> torch.Tensor:
        return self.state["items"]

    def train_plain(self, samples: RoundSamples, clients: torch.Tensor | None = None) -> torch.Tensor:
        """Plain FCF local training of `clients` (CPU long tensor; default all) on their own tables;
        returns the losses [U] (NaN for clients that did not train)."""
        out = torch.full((self.num_users,), float("nan"), dtype=torch.float64, device=self.device)
        if clients is not None and not clients.numel():
            return out
        plan = samples.plan(clients)
        tensors = self.state.for_plan(plan, self.backbone)
        losses = train_clients(
            self.backbone,
            plan,
            tensors,
            self.optimizer,
            self.ctx.training["early_stop_threshold"],
            self.ctx.training["kernels"],
        )
        self.state.write_back(plan, self.backbone, tensors)
        out[plan.clients.to(self.device)] = losses
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
        return self.train_plain(samples)
