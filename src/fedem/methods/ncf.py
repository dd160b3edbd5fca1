"""`ncf`: centralised NCF, the FedNCF tower (concat(p_u, q_i) -> 32-16-8-1) trained on all users' data
with BCE on the protocol's negatives (docs/methods/centralised.md)."""

from __future__ import annotations

import numpy as np
import torch

from fedem.methods.centralised import Centralised, bce_step, normal_table, running_loss
from fedem.methods.fedncf import check_tower
from fedem.rng import torch_gen


class NCF(Centralised):
    name = "ncf"

    def build(self, ctx):
        d, std, layers = ctx.training["latent_dim"], ctx.hparams["init_std"], ctx.hparams["mlp_layers"]
        check_tower(self.name, layers, d)
        gen = torch_gen(ctx.seed, "init-mlp")
        tower = []
        for fan_in, fan_out in zip(layers[:-1], layers[1:]):
            weight = torch.empty(fan_out, fan_in)
            torch.nn.init.xavier_uniform_(weight, generator=gen)
            tower += [torch.nn.Parameter(weight), torch.nn.Parameter(torch.zeros(fan_out))]
        params = {
            "user": normal_table(self.num_users, d, std, ctx.seed, "init-user-table"),
            "items": normal_table(self.num_items, d, std, ctx.seed, "init-item-table"),
            **{f"mlp.{i}": p for i, p in enumerate(tower)},
        }
        return {n: torch.nn.Parameter(p.detach().to(self.device)) for n, p in params.items()}

    def param_groups(self):
        return {
            "embedding": [self.params["user"], self.params["items"]],
            "mlp": [p for n, p in self.params.items() if n.startswith("mlp.")],
        }

    def logits(self, p_u: torch.Tensor, q_i: torch.Tensor) -> torch.Tensor:
        h = torch.cat((p_u, q_i), dim=-1)
        tower = [p for n, p in self.params.items() if n.startswith("mlp.")]
        for layer in range(len(tower) // 2):
            h = torch.nn.functional.linear(h, tower[2 * layer], tower[2 * layer + 1])
            if layer < len(tower) // 2 - 1:
                h = torch.relu(h)
        return h.squeeze(-1)

    def train_round(self, round_index: int, samples, negatives: np.ndarray) -> torch.Tensor:
        users, items, labels = (t.to(self.device) for t in self.epoch_samples(round_index, negatives))
        total = 0.0
        for part in self.batches(len(users)):
            logits = self.logits(self.params["user"][users[part]], self.params["items"][items[part]])
            total += bce_step(self.adam, torch.sigmoid(logits), labels[part]) * (part.stop - part.start)
        return running_loss(total, len(users), self.num_users, self.device)

    @torch.no_grad()
    def score(self, users, items):
        p_u = self.params["user"][users].unsqueeze(1).expand(-1, items.shape[1], -1)
        return torch.sigmoid(self.logits(p_u, self.params["items"][items]))

    @torch.no_grad()
    def score_all(self, users):
        q = self.params["items"].unsqueeze(0).expand(users.numel(), -1, -1)
        p_u = self.params["user"][users].unsqueeze(1).expand(-1, self.num_items, -1)
        return torch.sigmoid(self.logits(p_u, q))
