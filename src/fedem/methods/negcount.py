"""`neg-count`: the no-learning sanity scorer of PROTOCOL.md §6. A user's candidates are ranked by
how rarely each was drawn as that user's training negative so far. It learns nothing, so any
score it reaches measures the protocol's leak, not recommendation quality."""

from __future__ import annotations

import numpy as np
import torch

from fedem.methods.base import Method, MethodContext
from fedem.training.schedule import RoundSamples


class NegCount(Method):
    name = "neg-count"
    needs_samples = False

    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        self.counts = torch.zeros((self.num_users, self.num_items), dtype=torch.int32, device=self.device)
        self.row_users = torch.from_numpy(ctx.dataset.train_users).to(self.device)

    def train_round(self, round_index: int, samples: RoundSamples | None, negatives: np.ndarray) -> torch.Tensor:
        neg = torch.from_numpy(negatives).to(self.device)
        users = self.row_users.unsqueeze(1).expand_as(neg)
        ones = torch.ones(neg.numel(), dtype=torch.int32, device=self.device)
        self.counts.index_put_((users.reshape(-1), neg.reshape(-1)), ones, accumulate=True)
        return torch.full((self.num_users,), float("nan"), dtype=torch.float64, device=self.device)

    def score(self, users, items):
        return -self.counts[users.unsqueeze(1), items].to(torch.float32)

    def score_all(self, users):
        return -self.counts[users].to(torch.float32)
