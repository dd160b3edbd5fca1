"""Training-negative sampler (PROTOCOL.md §3): pools, exclusions, uniformity, determinism, speed."""

import time

import numpy as np
import pytest

from fedem.data.negatives import TrainNegativeSampler
from fedem.data.preprocess import preprocess
from fedem.data.registry import get_spec
from fedem.errors import ConfigError


def test_unobserved_never_draws_interacted_items(tiny_dataset):
    ds = tiny_dataset
    s = TrainNegativeSampler(ds, "unobserved", 4)
    interacted = ds.interacted_mask()
    for t in range(5):
        neg = s.sample(0, t)
        assert neg.shape == (len(ds.train_items), 4)
        assert not interacted[ds.train_users[:, None], neg].any()
        assert all(len(set(r)) == 4 for r in neg)  # without replacement within one positive


def test_non_train_draws_held_out_items_at_the_uniform_rate(tiny_dataset):
    """Under non_train, a user's val/test items are as likely as any other non-train item, and
    train positives never appear. Chi-square-style check with a fixed seed."""
    ds = tiny_dataset
    s = TrainNegativeSampler(ds, "non_train", 4)
    train = ds.train_mask()
    held_hits, held_expected = 0, 0.0
    for t in range(200):
        neg = s.sample(7, t)
        users = ds.train_users[:, None]
        assert not train[users, neg].any()
        held = (neg == ds.val_items[users]) | (neg == ds.test_items[users])
        held_hits += int(held.sum())
    # per draw-row the chance of hitting one of the 2 held-out items, 4 distinct draws from pool n
    pool = ds.num_items - train.sum(1)
    per_row = 4 * 2 / pool[ds.train_users]
    held_expected = 200 * per_row.sum()
    sd = np.sqrt(held_expected)
    assert abs(held_hits - held_expected) < 4 * sd, (held_hits, held_expected)


def test_unobserved_and_non_train_differ_exactly_on_held_out(tiny_dataset):
    ds = tiny_dataset
    diff = ds.interacted_mask() ^ ds.train_mask()
    users = np.arange(ds.num_users)
    assert diff[users, ds.val_items].all() and diff[users, ds.test_items].all()
    assert diff.sum() == 2 * ds.num_users


def test_seeded_by_seed_and_round(tiny_dataset):
    s = TrainNegativeSampler(tiny_dataset, "unobserved", 4)
    np.testing.assert_array_equal(s.sample(0, 3), s.sample(0, 3))
    assert (s.sample(0, 3) != s.sample(0, 4)).any()
    assert (s.sample(0, 3) != s.sample(1, 3)).any()


def test_uniform_over_the_pool():
    """One user, 8 train items among 20: each of the 12 pool items is drawn equally often."""
    import pandas as pd

    rows = pd.DataFrame(
        [("a", f"i{k}", 1.0, float(k)) for k in range(10)] + [("b", f"i{k}", 1.0, 0.0) for k in range(10, 20)],
        columns=["user", "item", "rating", "timestamp"],
    )
    ds = preprocess(rows, dataset="t", dedupe=False, min_user_interactions=10, num_eval_negatives=5, data_seed=0)
    s = TrainNegativeSampler(ds, "non_train", 4)
    counts = np.zeros(ds.num_items)
    for t in range(300):
        neg = s.sample(0, t)[: ds.train_counts[0]]
        np.add.at(counts, neg.ravel(), 1)
    pool = np.flatnonzero(~ds.train_mask()[0])
    assert counts[ds.user_train_items(0)].sum() == 0
    expected = counts.sum() / len(pool)
    chi2 = ((counts[pool] - expected) ** 2 / expected).sum()
    assert chi2 < 35  # df = 11; p(chi2 > 35) ~ 2.5e-4


def test_unknown_pool_and_too_small_pool(tiny_dataset):
    with pytest.raises(ConfigError, match="valid: unobserved, non_train"):
        TrainNegativeSampler(tiny_dataset, "everything", 4)
    with pytest.raises(ConfigError, match="fewer than num_negatives"):
        TrainNegativeSampler(tiny_dataset, "unobserved", 10_000)


def test_fast_enough_for_lastfm(mirror):
    rows = get_spec("lastfm-2k").parser(mirror / "lastfm-2k" / "user_taggedartists.dat")
    ds = preprocess(
        rows, dataset="lastfm-2k", dedupe=False, min_user_interactions=10, num_eval_negatives=99, data_seed=0
    )
    s = TrainNegativeSampler(ds, "unobserved", 4)
    s.sample(0, 0)
    start = time.perf_counter()
    s.sample(0, 1)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"{elapsed:.2f}s for one round of lastfm-2k negatives"
