import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedem.config import load_config, run_config
from fedem.data.preprocess import preprocess

REPO = Path(__file__).resolve().parents[1]


def mirror_dir() -> Path | None:
    env = os.environ.get("FEDEM_DATA_MIRROR")
    path = Path(env) if env else REPO.parent / "shared" / "datasets"
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def mirror() -> Path:
    # session-scoped, so it is resolved before any test's function fixtures run: a fixture that
    # unsets FEDEM_DATA_MIRROR for the code under test (test_availability's `config`) cannot hide
    # the mirror this run was given
    path = mirror_dir()
    if path is None:
        pytest.skip("no offline dataset mirror (set FEDEM_DATA_MIRROR)")
    return path


def synthetic_rows(num_users=24, num_items=60, seed=0, lo=10, hi=26) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(num_users):
        n = rng.integers(lo, hi)
        items = rng.choice(num_items, size=n, replace=False)
        for i in items:
            rows.append((f"u{u}", f"i{i}", float(rng.integers(1, 6)), float(rng.integers(0, 50))))
    return pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"])


@pytest.fixture
def tiny_dataset():
    ds = preprocess(
        synthetic_rows(), dataset="tiny", dedupe=False, min_user_interactions=10, num_eval_negatives=20, data_seed=0
    )
    ds.meta["content_hash"] = "tiny"
    return ds


def tiny_run_config(method: str, protocol: str = "authors", **training) -> dict:
    cfg = load_config(REPO / "config" / "config.yaml")
    rc = run_config(cfg, protocol, method)
    rc["training"].update(
        {"rounds": 3, "batch_size": 8, "local_epochs": 3, "device": "cpu", "full_ranking": True, **training}
    )
    if method == "fedem":
        rc["method"]["agg_clients_ratio"] = 0.25
    return rc


def round_data(ds, rc: dict, seed: int, t: int, device: str = "cpu"):
    """Round t's training negatives and samples (the authors' negative pool), as the engine builds them."""
    import torch

    from fedem.data.negatives import TrainNegativeSampler
    from fedem.training.schedule import make_round_samples

    tr = rc["training"]
    negatives = TrainNegativeSampler(ds, "unobserved", tr["num_negatives"]).sample(seed, t)
    samples = make_round_samples(
        ds.train_indptr, ds.train_items, negatives, tr["local_epochs"], tr["batch_size"], seed, t, torch.device(device)
    )
    return negatives, samples
