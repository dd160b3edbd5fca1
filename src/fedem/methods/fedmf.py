"""`fedmf`: FCF with one shared item table, FedAvg-aggregated (sample-weighted) every round;
each user embedding stays private. Only the rows a client touched can differ from the table it
received, so the average is a weighted scatter-add of the pool rows' changes."""

from __future__ import annotations

import numpy as np
import torch

from fedem.methods.aggregation import fedavg_rows
from fedem.methods.base import Method, MethodContext
from fedem.training.backbones import FCF, fcf_scores, init_fcf
from fedem.training.schedule import RoundSamples
from fedem.training.state import ClientState
from fedem.training.trainer import train_clients


class FedMF(Method):
    name = "fedmf"

    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        items, user = init_fcf(self.num_items, ctx.training["latent_dim"], ctx.seed)
        self.backbone = FCF(items_shared=True)
        self.item_table = items.to(self.device)  # the server's table
        self.state = ClientState.from_template({"user": user}, self.num_users, self.device)

    @property
    def user_emb(self) -> torch.Tensor:
        return self.state["user"]

    def train_round(self, round_index: int, samples: RoundSamples, negatives: np.ndarray) -> torch.Tensor:
        plan = samples.plan()
        pool_items = plan.pool_items.to(self.device)
        received = self.item_table[pool_items]  # each client's copy of the rows it will touch
        tensors = {**self.state.for_plan(plan, self.backbone), "items": received.clone()}
        losses = train_clients(
            self.backbone,
            plan,
            tensors,
            self.optimizer,
            self.ctx.training["early_stop_threshold"],
            self.ctx.training["kernels"],
        )
        self.state.write_back(plan, self.backbone, {"user": tensors["user"]})
        fedavg_rows(self.item_table, plan, tensors["items"], received)
        out = torch.empty(self.num_users, dtype=torch.float64, device=self.device)
        out[plan.clients.to(self.device)] = losses
        return out

    def score(self, users, items):
        return fcf_scores(self.user_emb[users], self.item_table[items])

    def score_all(self, users):
        return torch.sigmoid(self.user_emb[users] @ self.item_table.T)
