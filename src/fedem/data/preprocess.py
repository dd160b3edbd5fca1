"""Raw rows -> federated leave-one-out dataset, exactly as PROTOCOL.md §2."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fedem.data.dataset import FederatedDataset
from fedem.errors import DataError

PREPROCESS_VERSION = 1  # bump when the protocol's output changes for the same input


def preprocess(
    rows: pd.DataFrame,
    *,
    dataset: str,
    dedupe: bool,
    min_user_interactions: int,
    num_eval_negatives: int,
    data_seed: int,
) -> FederatedDataset:
    """rows: columns user, item (str), rating, timestamp, in raw file order."""
    df = rows[["user", "item", "rating", "timestamp"]].copy()
    df["row_order"] = np.arange(len(df), dtype=np.int64)
    df = df[df["rating"] > 0]  # §2.2 binarise: every remaining row is a positive
    if dedupe:  # §2.3 keep each (user, item) pair's earliest row, before the user filter
        df = df.sort_values(["timestamp", "row_order"], kind="stable")
        df = df.drop_duplicates(["user", "item"], keep="first").sort_values("row_order", kind="stable")
    counts = df.groupby("user", sort=False)["item"].transform("size")
    df = df[counts >= min_user_interactions]  # §2.5
    if df.empty:
        raise DataError(f"{dataset}: no user has >= {min_user_interactions} interactions")

    # §2.6 ids in order of first appearance after filtering
    user_codes, user_ids = pd.factorize(df["user"], sort=False)
    item_codes, item_ids = pd.factorize(df["item"], sort=False)
    df = df.assign(u=user_codes.astype(np.int64), i=item_codes.astype(np.int64))

    # §2.7 stable chronological order per user: ties keep file order (the authors' sort is unstable)
    df = df.sort_values(["u", "timestamp", "row_order"], kind="stable")
    users = df["u"].to_numpy()
    items = df["i"].to_numpy()
    num_users = len(user_ids)
    per_user = np.bincount(users, minlength=num_users)
    ends = np.cumsum(per_user)
    test_items = items[ends - 1]
    val_items = items[ends - 2]
    keep = np.ones(len(items), dtype=bool)
    keep[ends - 1] = False
    keep[ends - 2] = False
    train_items = items[keep]
    train_indptr = np.concatenate([[0], np.cumsum(per_user - 2)]).astype(np.int64)

    ds = FederatedDataset(
        train_indptr=train_indptr,
        train_items=train_items.astype(np.int64),
        val_items=val_items.astype(np.int64),
        test_items=test_items.astype(np.int64),
        eval_negatives=np.empty((num_users, 0), dtype=np.int64),
        user_ids=np.asarray(user_ids, dtype=str),
        item_ids=np.asarray(item_ids, dtype=str),
    )
    ds.eval_negatives = sample_eval_negatives(ds, num_eval_negatives, data_seed)
    ds.meta = {
        "dataset": dataset,
        "dedupe": dedupe,
        "min_user_interactions": min_user_interactions,
        "num_eval_negatives": num_eval_negatives,
        "data_seed": data_seed,
        "preprocess_version": PREPROCESS_VERSION,
    }
    return ds


def sample_eval_negatives(ds: FederatedDataset, k: int, data_seed: int) -> np.ndarray:
    """§2.8: per user, k items drawn uniformly without replacement from the items the user never
    interacted with; one generator from the data seed, users in id order."""
    from fedem.rng import numpy_rng  # here, not at the top: the report imports this module, and rng imports torch

    rng = numpy_rng(data_seed, "eval-negatives")
    interacted = ds.interacted_mask()
    out = np.empty((ds.num_users, k), dtype=np.int64)
    for user in range(ds.num_users):
        pool = np.flatnonzero(~interacted[user])
        if pool.size < k:
            raise DataError(
                f"{ds.meta.get('dataset', 'dataset')}: user {ds.user_ids[user]} has only {pool.size} "
                f"never-interacted items, fewer than num_eval_negatives={k}"
            )
        out[user] = rng.choice(pool, size=k, replace=False)
    return out


def dataset_stats(ds: FederatedDataset) -> dict:
    """Counts, sparsity, per-user interaction quantiles and the held-out-in-train leakage rates."""
    per_user = ds.train_counts + 2
    interactions = int(per_user.sum())
    train_mask = ds.train_mask()
    users = np.arange(ds.num_users)
    quantiles = np.quantile(per_user, [0.0, 0.25, 0.5, 0.75, 0.9, 1.0])
    return {
        "dataset": ds.meta.get("dataset"),
        "dedupe": ds.meta.get("dedupe"),
        "users": ds.num_users,
        "items": ds.num_items,
        "interactions": interactions,
        "sparsity": 1.0 - interactions / (ds.num_users * ds.num_items),
        "interactions_per_user": {
            "mean": float(per_user.mean()),
            **{name: float(q) for name, q in zip(("min", "p25", "median", "p75", "p90", "max"), quantiles)},
        },
        "test_item_in_train_rate": float(train_mask[users, ds.test_items].mean()),
        "val_item_in_train_rate": float(train_mask[users, ds.val_items].mean()),
        "content_hash": ds.meta.get("content_hash"),
    }
