"""`fedncf`: FedNCF, the NCF tower of the FedCA / FedEM authors' code (docs/methods/fedncf.md) behind the
fedmf server: the user embedding stays private; the item table and every weight and bias of the MLP on
concat(p_u, q_i) are FedAvg-aggregated (sample-weighted) every round, and every client starts the next
round from them."""

from __future__ import annotations

import numpy as np
import torch

from fedem.errors import ConfigError
from fedem.methods.aggregation import fedavg, fedavg_rows, sample_weights
from fedem.methods.base import Method, MethodContext
from fedem.training.backbones import init_fcf, init_linear_stack
from fedem.training.ncf_tower import SplitNCF
from fedem.training.schedule import RoundSamples
from fedem.training.state import ClientState
from fedem.training.trainer import train_clients


def check_tower(key: str, layers: list[int], latent_dim: int) -> None:
    if layers[0] != 2 * latent_dim or layers[-1] != 1:
        raise ConfigError(
            f"methods.{key}.mlp_layers={layers}: the first size must be 2*latent_dim={2 * latent_dim} "
            "(the tower reads concat(p_u, q_i)) and the last must be 1"
        )


class FedNCF(Method):
    name = "fedncf"

    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        layers = ctx.hparams["mlp_layers"]
        check_tower(self.name, layers, ctx.training["latent_dim"])
        items, user = init_fcf(self.num_items, ctx.training["latent_dim"], ctx.seed)
        self.backbone = SplitNCF(layers)
        self.item_table = items.to(self.device)  # the server's table and tower
        self.mlp = {
            n: t.to(self.device)
            for n, t in zip(self.backbone.mlp_names, init_linear_stack(layers, ctx.seed, "init-mlp"))
        }
        self.state = ClientState.from_template({"user": user}, self.num_users, self.device)

    @property
    def user_emb(self) -> torch.Tensor:
        return self.state["user"]

    def train_round(self, round_index: int, samples: RoundSamples, negatives: np.ndarray) -> torch.Tensor:
        plan = samples.plan()
        pool_items = plan.pool_items.to(self.device)
        received = self.item_table[pool_items]
        towers = {n: t.expand((plan.num_clients,) + t.shape).clone() for n, t in self.mlp.items()}
        tensors = {**self.state.for_plan(plan, self.backbone), "items": received.clone(), **towers}
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
        self.mlp = fedavg(towers, sample_weights(plan.sample_counts.to(self.device)))
        out = torch.empty(self.num_users, dtype=torch.float64, device=self.device)
        out[plan.clients.to(self.device)] = losses
        return out

    def _scores(self, users: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        towers = {n: t.expand((users.numel(),) + t.shape) for n, t in self.mlp.items()}
        return self.backbone.scores({"user": self.user_emb[users], "items": rows, **towers})

    def score(self, users, items):
        return self._scores(users, self.item_table[items])

    def score_all(self, users):
        return self._scores(users, self.item_table.expand(users.numel(), -1, -1))
