"""HR/NDCG against hand-computed values (PROTOCOL.md §4)."""

import math

import pytest
import torch

from fedem.metrics import full_ranks, hr_ndcg, sampled_ranks


def test_sampled_ranks_ties_count_against_the_positive():
    pos = torch.tensor([0.9, 0.5, 0.5, 0.1])
    neg = torch.tensor(
        [
            [0.1, 0.2, 0.3],  # nothing beats it -> rank 1
            [0.6, 0.5, 0.4],  # one higher, one tie -> rank 3
            [0.5, 0.5, 0.5],  # all tie -> rank 4
            [0.2, 0.3, 0.4],  # all higher -> rank 4
        ]
    )
    assert sampled_ranks(pos, neg).tolist() == [1, 3, 4, 4]


@pytest.mark.parametrize("k", [1, 5, 10, 20])
def test_hr_ndcg_by_hand(k):
    ranks = torch.tensor([1, 2, 5, 6, 10, 11, 20, 21])
    hits = [r for r in ranks.tolist() if r <= k]
    expected_hr = len(hits) / 8
    expected_ndcg = sum(1 / math.log2(1 + r) for r in hits) / 8
    out = hr_ndcg(ranks, [k])
    assert out[f"hr@{k}"] == pytest.approx(expected_hr)
    assert out[f"ndcg@{k}"] == pytest.approx(expected_ndcg)


def test_hand_table():
    # ranks 1, 3, 4, 4 at K=1 and K=3: HR@1 = 1/4, NDCG@1 = 1/4; HR@3 = 2/4, NDCG@3 = (1 + 1/log2 4)/4
    out = hr_ndcg(torch.tensor([1, 3, 4, 4]), [1, 3])
    assert out == pytest.approx({"hr@1": 0.25, "ndcg@1": 0.25, "hr@3": 0.5, "ndcg@3": (1 + 0.5) / 4})


def test_full_ranking_excludes_train_items_but_never_the_positive():
    scores = torch.tensor(
        [
            [0.9, 0.8, 0.7, 0.6, 0.5],
            [0.1, 0.2, 0.3, 0.4, 0.5],
        ]
    )
    pos = torch.tensor([3, 4])
    excluded = torch.tensor(
        [
            [True, False, True, False, False],  # items 0 and 2 are train items: only item 1 beats item 3
            [False, False, False, False, True],  # the positive itself is flagged: still ranked, rank 1
        ]
    )
    assert full_ranks(scores, pos, excluded).tolist() == [2, 1]


def test_full_ranking_ties_count_against_the_positive():
    scores = torch.tensor([[0.5, 0.5, 0.5, 0.1]])
    assert full_ranks(scores, torch.tensor([1]), torch.zeros(1, 4, dtype=torch.bool)).tolist() == [3]
