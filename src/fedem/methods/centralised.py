"""Centralised references (docs/methods/centralised.md): one model trained on every user's training
data, on the same artifact, negatives, evaluator and selection as the federated methods. A "round" is
one epoch: one pass over every training positive, each with the round's negatives of the federated
sampler (the protocol's pool), in one global shuffle drawn from (seed, round), with one Adam kept
across epochs. Not federated: the tables show them as upper references, never ranked."""

from __future__ import annotations

import numpy as np
import torch

from fedem.methods.base import Method, MethodContext
from fedem.rng import torch_gen


class Centralised(Method):
    needs_samples = False  # it builds its own global batches from the round's negatives

    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        self.train_users = torch.from_numpy(ctx.dataset.train_users).long()
        self.train_items = torch.from_numpy(ctx.dataset.train_items).long()
        self.params = self.build(ctx)
        lr = self.optimizer.lrs
        groups = [
            {"params": ps, "lr": lr[g], "weight_decay": self.optimizer.weight_decay.get(g, 0.0)}
            for g, ps in self.param_groups().items()
        ]
        betas, eps = self.optimizer.betas, self.optimizer.eps
        self.adam = torch.optim.Adam(groups, betas=betas, eps=eps, foreach=False)

    def build(self, ctx: MethodContext) -> dict[str, torch.nn.Parameter]:
        raise NotImplementedError

    def param_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        raise NotImplementedError

    def epoch_samples(self, round_index: int, negatives: np.ndarray):
        """(users, items, labels) of one epoch: every positive then its negatives, globally shuffled."""
        negs = torch.from_numpy(negatives).long()
        k = negs.shape[1]
        users = self.train_users.repeat_interleave(1 + k)
        items = torch.cat([self.train_items.unsqueeze(1), negs], dim=1).reshape(-1)
        labels = torch.zeros(len(self.train_items), 1 + k)
        labels[:, 0] = 1.0
        order = torch.randperm(len(users), generator=torch_gen(self.ctx.seed, "centralised-order", round_index))
        return users[order], items[order], labels.reshape(-1)[order]

    def batches(self, n: int):
        size = self.ctx.training["batch_size"]
        return [slice(lo, min(lo + size, n)) for lo in range(0, n, size)]


def bce_step(adam: torch.optim.Optimizer, probs: torch.Tensor, labels: torch.Tensor) -> float:
    adam.zero_grad()
    loss = torch.nn.functional.binary_cross_entropy(probs, labels)
    loss.backward()
    adam.step()
    return loss.item()


def normal_table(rows: int, dim: int, std: float, seed: int, purpose: str) -> torch.nn.Parameter:
    return torch.nn.Parameter(torch.randn((rows, dim), generator=torch_gen(seed, purpose)) * std)


def running_loss(total: float, count: int, num_users: int, device) -> torch.Tensor:
    """The epoch's mean loss, reported for every user (one shared model)."""
    return torch.full((num_users,), total / max(count, 1), dtype=torch.float64, device=device)
