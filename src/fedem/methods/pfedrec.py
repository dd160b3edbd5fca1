"""`pfedrec`: PFedRec (Zhang et al., IJCAI 2023) as its released code runs it (docs/methods/pfedrec.md).

No user embedding: each client scores with a private head sigmoid(w_u . q_i + b_u). Every round each
client starts from the server's item table, trains one epoch taking two SGD steps per mini-batch (the
head, then a fresh forward and the item table, at lr * num_items * lr_eta), and keeps that tuned table
for evaluation; the server takes the unweighted mean of the tuned tables. Only the rows a client's
samples touch move, so a client's table is the received table plus its pool rows. `upload_noise` (Table 4,
not in the released code) adds Laplace noise to every whole uploaded table; the client keeps its clean one."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from fedem.methods.base import Method, MethodContext
from fedem.methods.privacy_sum import laplace_sum
from fedem.rng import numpy_rng
from fedem.training.backbones import ItemLinear, init_fcf, init_linear_stack
from fedem.training.schedule import RoundSamples
from fedem.training.state import ClientState
from fedem.training.trainer import train_clients

HEAD_THEN_ITEMS = (("head",), ("items",))


class TunedRows:
    """Each client's tuned item table stored sparsely: the table it received plus the rows it trained.
    keys = client * num_items + item, sorted; rows [R, d] in key order."""

    def __init__(self, received: torch.Tensor, keys: torch.Tensor, rows: torch.Tensor):
        self.received, self.keys, self.rows = received, keys, rows
        self.num_items = received.shape[0]

    @classmethod
    def untrained(cls, table: torch.Tensor) -> TunedRows:
        empty = torch.empty(0, dtype=torch.long, device=table.device)
        return cls(table, empty, table.new_empty((0, table.shape[1])))

    def gather(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Rows [n, K, d] of items [n, K] in each user's tuned table."""
        base = self.received[items]
        if not self.keys.numel():
            return base
        wanted = users.unsqueeze(1) * self.num_items + items
        pos = torch.searchsorted(self.keys, wanted).clamp(max=self.keys.numel() - 1)
        hit = self.keys[pos] == wanted
        return torch.where(hit.unsqueeze(-1), self.rows[pos], base)

    def tables(self, users: torch.Tensor) -> torch.Tensor:
        """Whole tuned tables [n, I, d] of users [n]."""
        out = self.received.expand(users.numel(), -1, -1).clone()
        lo = torch.searchsorted(self.keys, users * self.num_items)
        hi = torch.searchsorted(self.keys, (users + 1) * self.num_items)
        for rank in range(users.numel()):
            span = slice(int(lo[rank]), int(hi[rank]))
            out[rank, self.keys[span] % self.num_items] = self.rows[span]
        return out


class PFedRec(Method):
    name = "pfedrec"

    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        d = ctx.training["latent_dim"]
        items, _ = init_fcf(self.num_items, d, ctx.seed)
        weight, bias = init_linear_stack([d, 1], ctx.seed, "init-score-head")
        self.backbone = ItemLinear()
        self.item_table = items.to(self.device)  # the server's mean table
        self.state = ClientState.from_template(
            {"head.weight": weight[0], "head.bias": bias}, self.num_users, self.device
        )
        # the released code scales the item table's SGD lr by the item count (its issue #2)
        lrs = dict(self.optimizer.lrs)
        lrs["items"] = lrs["items"] * self.num_items * ctx.hparams["lr_eta"]
        self.optimizer = dataclasses.replace(self.optimizer, lrs=lrs)
        self.tuned = TunedRows.untrained(self.item_table)

    def train_round(self, round_index: int, samples: RoundSamples, negatives: np.ndarray) -> torch.Tensor:
        plan = samples.plan()
        pool_items = plan.pool_items.to(self.device)
        received = self.item_table[pool_items]
        tensors = {**self.state.for_plan(plan, self.backbone), "items": received.clone()}
        losses = train_clients(
            self.backbone,
            plan,
            tensors,
            self.optimizer,
            self.ctx.training["early_stop_threshold"],
            self.ctx.training["kernels"],
            step_groups=HEAD_THEN_ITEMS,
        )
        self.state.write_back(plan, self.backbone, {n: tensors[n] for n in ("head.weight", "head.bias")})
        owners = plan.clients.to(self.device)[plan.pool_client.to(self.device)]
        keys, order = torch.sort(owners * self.num_items + pool_items)
        self.tuned = TunedRows(self.item_table.clone(), keys, tensors["items"][order])
        # unweighted mean over all clients: G + (1/n) sum_u (T_u - G), nonzero on pool rows only
        self.item_table.index_add_(0, pool_items, (tensors["items"] - received) / plan.num_clients)
        if self.ctx.hparams["upload_noise"] > 0:  # the server sees every whole upload plus Laplace noise
            self.item_table.add_(self._upload_noise_sum(round_index, plan.num_clients) / plan.num_clients)
        out = torch.empty(self.num_users, dtype=torch.float64, device=self.device)
        out[plan.clients.to(self.device)] = losses
        return out

    def _upload_noise_sum(self, round_index: int, num_clients: int) -> torch.Tensor:
        """sum_u N_u of the clients' noise tables [I, d], N_u i.i.d. Laplace(0, upload_noise) per entry, drawn
        exactly as one sum (fedem.methods.privacy_sum.laplace_sum) from a generator of (seed, round)."""
        rng = numpy_rng(self.ctx.seed, "upload-noise", round_index)
        total = laplace_sum(tuple(self.item_table.shape), self.ctx.hparams["upload_noise"], num_clients, rng)
        return total.to(self.item_table.dtype).to(self.device)

    def _scores(self, users: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        head = {n: self.state[n][users] for n in ("head.weight", "head.bias")}
        return self.backbone.scores({**head, "items": rows})

    def score(self, users, items):
        return self._scores(users, self.tuned.gather(users, items))

    def score_all(self, users):
        return self._scores(users, self.tuned.tables(users))
