"""`lightgcn`: centralised LightGCN (He et al., SIGIR 2020) with BPR on the protocol's negatives
(docs/methods/centralised.md). The graph is the training interactions only (user-item pairs, each once),
normalised D^-1/2 A D^-1/2 over users and items; the final embedding is the mean of layers 0..L; every
positive is paired with each of its round's negatives; the loss is mean softplus(s_neg - s_pos) plus
weight_decay * 0.5 * (|u_0|^2 + |i_0|^2 + |j_0|^2) / B on the layer-0 rows (the LightGCN-PyTorch form)."""

from __future__ import annotations

import numpy as np
import torch

from fedem.methods.centralised import Centralised, normal_table, running_loss
from fedem.rng import torch_gen


def normalised_adjacency(users: np.ndarray, items: np.ndarray, num_users: int, num_items: int) -> torch.Tensor:
    """The symmetric-normalised bipartite adjacency [(U + I), (U + I)] (sparse CSR) of the unique
    (user, item) training pairs."""
    pairs = np.unique(np.stack([users, items], axis=1), axis=0)
    u = torch.from_numpy(pairs[:, 0]).long()
    i = torch.from_numpy(pairs[:, 1]).long() + num_users
    rows, cols = torch.cat([u, i]), torch.cat([i, u])
    n = num_users + num_items
    degree = torch.zeros(n).index_add_(0, rows, torch.ones(len(rows)))
    inv_sqrt = degree.clamp(min=1).rsqrt() * (degree > 0)
    values = inv_sqrt[rows] * inv_sqrt[cols]
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), values, (n, n)).coalesce().to_sparse_csr()


class _SymmetricProduct(torch.autograd.Function):
    """A @ h for a symmetric sparse A, whose gradient A^T @ g is A @ g. torch's own CSR backward builds
    A^T on every call (a sort and two gathers: ~10x the product itself on ml-100k, and most of a
    LightGCN epoch, which propagates once per batch); this reuses A. Same values: A is exactly
    symmetric (normalised_adjacency), so A @ g sums the same products in the same order."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
        ctx.adjacency = adjacency
        return adjacency @ h

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return ctx.adjacency @ grad, None


def propagate(adjacency: torch.Tensor, ego: torch.Tensor, layers: int) -> torch.Tensor:
    """Mean of E_0, A E_0, ..., A^L E_0 (A: the symmetric normalised adjacency)."""
    out, h = ego, ego
    for _ in range(layers):
        h = _SymmetricProduct.apply(h, adjacency)
        out = out + h
    return out / (layers + 1)


class LightGCN(Centralised):
    name = "lightgcn"

    def build(self, ctx):
        d, std = ctx.training["latent_dim"], ctx.hparams["init_std"]
        ds = ctx.dataset
        adjacency = normalised_adjacency(ds.train_users, ds.train_items, self.num_users, self.num_items)
        self.adjacency = adjacency.to(self.device)
        ego = normal_table(self.num_users + self.num_items, d, std, ctx.seed, "init-ego-table")
        return {"ego": torch.nn.Parameter(ego.detach().to(self.device))}

    def param_groups(self):
        return {"embedding": [self.params["ego"]]}

    def final(self) -> tuple[torch.Tensor, torch.Tensor]:
        out = propagate(self.adjacency, self.params["ego"], self.ctx.hparams["layers"])
        return out[: self.num_users], out[self.num_users :]

    def epoch_pairs(self, round_index: int, negatives: np.ndarray):
        """(users, positives, negatives) of one epoch: each positive with each of its negatives, shuffled."""
        negs = torch.from_numpy(negatives).long()
        k = negs.shape[1]
        users = self.train_users.repeat_interleave(k)
        pos = self.train_items.repeat_interleave(k)
        order = torch.randperm(len(users), generator=torch_gen(self.ctx.seed, "centralised-order", round_index))
        return users[order], pos[order], negs.reshape(-1)[order]

    def train_round(self, round_index: int, samples, negatives: np.ndarray) -> torch.Tensor:
        users, pos, neg = (t.to(self.device) for t in self.epoch_pairs(round_index, negatives))
        decay = self.ctx.hparams["reg_weight"]
        total = 0.0
        ego = self.params["ego"]
        for part in self.batches(len(users)):
            u, i, j = users[part], pos[part] + self.num_users, neg[part] + self.num_users
            self.adam.zero_grad()
            final = propagate(self.adjacency, ego, self.ctx.hparams["layers"])
            s_pos = (final[u] * final[i]).sum(1)
            s_neg = (final[u] * final[j]).sum(1)
            reg = 0.5 * (ego[u].square().sum() + ego[i].square().sum() + ego[j].square().sum()) / len(u)
            loss = torch.nn.functional.softplus(s_neg - s_pos).mean() + decay * reg
            loss.backward()
            self.adam.step()
            total += loss.item() * len(u)
        with torch.no_grad():
            self._final = self.final()
        return running_loss(total, len(users), self.num_users, self.device)

    # the raw BPR score ranks (a sigmoid would tie saturated scores, and ties count against the positive)
    @torch.no_grad()
    def score(self, users, items):
        user_final, item_final = self._final
        return (user_final[users].unsqueeze(1) * item_final[items]).sum(-1)

    @torch.no_grad()
    def score_all(self, users):
        user_final, item_final = self._final
        return user_final[users] @ item_final.T
