"""Ranking metrics (PROTOCOL.md §4), batched over users. Ties count against the positive."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


def sampled_ranks(pos_scores: torch.Tensor, neg_scores: torch.Tensor) -> torch.Tensor:
    """[U], [U, K] -> 1-based rank of the positive among itself and its K negatives.
    rank = 1 + #(neg > pos) + #(neg == pos): the authors' rank(method='first') with negatives first."""
    return 1 + (neg_scores >= pos_scores.unsqueeze(1)).sum(dim=1)


def full_ranks(scores: torch.Tensor, pos_items: torch.Tensor, excluded: torch.Tensor) -> torch.Tensor:
    """scores [U, I], pos_items [U], excluded [U, I] bool (the user's train items).
    Rank of the positive against every non-excluded item; the positive itself is never excluded."""
    rows = torch.arange(scores.shape[0], device=scores.device)
    pos = scores[rows, pos_items]
    beats = (scores >= pos.unsqueeze(1)) & ~excluded
    beats[rows, pos_items] = False
    return 1 + beats.sum(dim=1)


def hr_ndcg(ranks: torch.Tensor, ks: Iterable[int]) -> dict[str, float]:
    """HR@K = 1[rank <= K]; NDCG@K = 1[rank <= K] / log2(1 + rank); averaged over users."""
    ranks = ranks.double()
    out: dict[str, float] = {}
    for k in ks:
        hit = ranks <= k
        out[f"hr@{k}"] = float(hit.double().mean())
        out[f"ndcg@{k}"] = float((hit.double() * math.log(2) / torch.log1p(ranks)).mean())
    return out
