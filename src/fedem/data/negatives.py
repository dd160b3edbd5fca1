"""Training-time negatives (PROTOCOL.md §3), resampled every round for every client at once."""

from __future__ import annotations

import numpy as np

from fedem.data.dataset import FederatedDataset
from fedem.errors import ConfigError
from fedem.rng import numpy_rng

POOLS = ("unobserved", "non_train")


class TrainNegativeSampler:
    """k negatives per train positive: uniform over the pool, without replacement within one
    positive's k, with replacement across positives. Exact by rejection sampling, vectorised.

    Pools: 'unobserved' = items the user never interacted with in any split (the authors' code:
    held-out items are never drawn); 'non_train' = items outside the user's train set (clean)."""

    def __init__(self, ds: FederatedDataset, pool: str, num_negatives: int):
        if pool not in POOLS:
            raise ConfigError(f"unknown train_negatives_from '{pool}'; valid: {', '.join(POOLS)}")
        self.pool = pool
        self.num_negatives = num_negatives
        self.num_items = ds.num_items
        self.excluded = ds.interacted_mask() if pool == "unobserved" else ds.train_mask()
        self.row_users = ds.train_users
        pool_sizes = ds.num_items - self.excluded.sum(axis=1)
        if pool_sizes.min() < num_negatives:
            raise ConfigError(
                f"a user has only {pool_sizes.min()} candidate negatives in pool '{pool}', "
                f"fewer than num_negatives={num_negatives}"
            )

    def sample(self, seed: int, round_index: int) -> np.ndarray:
        """[N_train, k] negatives aligned with the dataset's train rows."""
        rng = numpy_rng(seed, "train-negatives", round_index)
        n, k = len(self.row_users), self.num_negatives
        out = np.empty((n, k), dtype=np.int64)
        for slot in range(k):
            todo = np.arange(n)
            while todo.size:
                cand = rng.integers(0, self.num_items, size=todo.size)
                bad = self.excluded[self.row_users[todo], cand]
                for prev in range(slot):
                    bad |= out[todo, prev] == cand
                out[todo[~bad], slot] = cand[~bad]
                todo = todo[bad]
        return out
