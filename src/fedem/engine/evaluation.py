"""Batched evaluation of every client's model: sampled ranking (the paper's) and full ranking."""

from __future__ import annotations

import torch

from fedem.methods.base import Method
from fedem.metrics import full_ranks, hr_ndcg, sampled_ranks

_FULL_CHUNK = 256  # users per chunk for full-ranking score matrices


class Evaluator:
    def __init__(self, dataset, device: torch.device, ks: list[int]):
        self.ks = ks
        self.device = device
        self.users = torch.arange(dataset.num_users, device=device)
        negatives = torch.from_numpy(dataset.eval_negatives).to(device)
        self.candidates = {
            split: torch.cat([torch.from_numpy(items).to(device).unsqueeze(1), negatives], dim=1)
            for split, items in (("val", dataset.val_items), ("test", dataset.test_items))
        }
        self.train_mask = torch.from_numpy(dataset.train_mask()).to(device)
        last_train = torch.from_numpy(dataset.train_items[dataset.train_indptr[1:] - 1]).to(device)
        # probes also score a held-in item (each user's latest train item) against the same negatives
        self.probe_items = {
            "val": (self.users, self.candidates["val"]),
            "train": (self.users, torch.cat([last_train.unsqueeze(1), negatives], dim=1)),
        }

    def sampled(self, method: Method, split: str) -> dict[str, float]:
        scores = method.score(self.users, self.candidates[split])
        if not bool(torch.isfinite(scores).all()):
            # BCE clamps its log terms, so a diverged model can keep a finite loss: check the scores
            raise FloatingPointError(f"non-finite {split} scores")
        return hr_ndcg(sampled_ranks(scores[:, 0], scores[:, 1:]), self.ks)

    def full(self, method: Method, split: str) -> dict[str, float]:
        ranks = []
        positives = self.candidates[split][:, 0]
        for lo in range(0, len(self.users), _FULL_CHUNK):
            users = self.users[lo : lo + _FULL_CHUNK]
            scores = method.score_all(users)
            ranks.append(full_ranks(scores, positives[users], self.train_mask[users]))
        return hr_ndcg(torch.cat(ranks), self.ks)
