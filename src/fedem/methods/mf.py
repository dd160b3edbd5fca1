"""`mf`: centralised matrix factorisation, sigmoid(p_u . q_i) with BCE on the protocol's negatives
(docs/methods/centralised.md)."""

from __future__ import annotations

import numpy as np
import torch

from fedem.methods.centralised import Centralised, bce_step, normal_table, running_loss


class MF(Centralised):
    name = "mf"

    def build(self, ctx):
        d, std = ctx.training["latent_dim"], ctx.hparams["init_std"]
        params = {
            "user": normal_table(self.num_users, d, std, ctx.seed, "init-user-table"),
            "items": normal_table(self.num_items, d, std, ctx.seed, "init-item-table"),
        }
        return {n: torch.nn.Parameter(p.detach().to(self.device)) for n, p in params.items()}

    def param_groups(self):
        return {"embedding": [self.params["user"], self.params["items"]]}

    def logits(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return (self.params["user"][users] * self.params["items"][items]).sum(-1)

    def train_round(self, round_index: int, samples, negatives: np.ndarray) -> torch.Tensor:
        users, items, labels = (t.to(self.device) for t in self.epoch_samples(round_index, negatives))
        total = 0.0
        for part in self.batches(len(users)):
            probs = torch.sigmoid(self.logits(users[part], items[part]))
            total += bce_step(self.adam, probs, labels[part]) * (part.stop - part.start)
        return running_loss(total, len(users), self.num_users, self.device)

    @torch.no_grad()
    def score(self, users, items):
        return torch.sigmoid(self.logits(users.unsqueeze(1), items))

    @torch.no_grad()
    def score_all(self, users):
        return torch.sigmoid(self.params["user"][users] @ self.params["items"].T)
