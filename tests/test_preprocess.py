"""PROTOCOL.md §2 on the real datasets: counts, determinism, evaluation negatives, artifacts."""

import hashlib

import numpy as np
import pytest

from fedem.data.dataset import load_dataset
from fedem.data.preprocess import dataset_stats, preprocess
from fedem.data.registry import get_spec

from conftest import REPO

# PROTOCOL.md §2: users / items / rows after steps 1-6
EXPECTED = {
    ("ml-100k", False): (943, 1682, 100_000),
    ("ml-100k", True): (943, 1682, 100_000),
    ("filmtrust", False): (1002, 2042, 33_372),
    ("filmtrust", True): (1002, 2042, 33_369),
    ("amazon-video", False): (1372, 7957, 23_181),
    ("amazon-video", True): (1372, 7957, 23_181),
    ("lastfm-2k", False): (1269, 12_322, 183_415),
    ("lastfm-2k", True): (881, 12_037, 67_284),
}
# sha256 of the ml-100k artifact (dups, data seed 0): pins the whole pipeline, including numpy's
# generator stream. If a dependency upgrade changes it, every stored number is suspect.
ML100K_ARTIFACT_SHA256 = "ed5c19a6885523c9b85ec26ba39710627d8bb06c45454a91f32ca5c4d2b2ce7d"

_cache = {}


def build(mirror, key, dedupe, data_seed=0):
    if (key, dedupe, data_seed) not in _cache:
        rows = get_spec(key).parser(mirror / key / get_spec(key).filename)
        _cache[key, dedupe, data_seed] = preprocess(
            rows, dataset=key, dedupe=dedupe, min_user_interactions=10, num_eval_negatives=99, data_seed=data_seed
        )
    return _cache[key, dedupe, data_seed]


@pytest.mark.parametrize("key,dedupe", sorted(EXPECTED))
def test_protocol_counts(mirror, key, dedupe):
    ds = build(mirror, key, dedupe)
    stats = dataset_stats(ds)
    assert (stats["users"], stats["items"], stats["interactions"]) == EXPECTED[key, dedupe]
    if dedupe:
        assert stats["test_item_in_train_rate"] == 0.0


@pytest.mark.parametrize("key,dedupe", sorted(EXPECTED))
def test_split_invariants(mirror, key, dedupe):
    ds = build(mirror, key, dedupe)
    assert ds.train_counts.min() >= 1
    interacted = ds.interacted_mask()
    users = np.arange(ds.num_users)[:, None]
    assert not interacted[users, ds.eval_negatives].any()  # never-interacted items only
    assert all(len(set(row)) == ds.eval_negatives.shape[1] for row in ds.eval_negatives)  # distinct


def test_leave_one_out_is_stable_chronological():
    # user a: two rows tie at the latest timestamp; the stable order keeps file order
    import pandas as pd

    rows = pd.DataFrame(
        [("a", f"i{k}", 1.0, float(t)) for k, t in enumerate([5, 1, 9, 9, 3, 2, 4, 6, 7, 8, 0])]
        + [("b", f"i{k}", 1.0, 1.0) for k in range(10)],
        columns=["user", "item", "rating", "timestamp"],
    )
    ds = preprocess(rows, dataset="t", dedupe=False, min_user_interactions=10, num_eval_negatives=0, data_seed=0)
    item = {raw: idx for idx, raw in enumerate(ds.item_ids)}
    assert ds.test_items[0] == item["i3"] and ds.val_items[0] == item["i2"]  # tie at t=9: file order
    assert ds.test_items[1] == item["i9"] and ds.val_items[1] == item["i8"]  # all tied: last rows
    assert [ds.item_ids[i] for i in ds.user_train_items(0)] == ["i10", "i1", "i5", "i4", "i6", "i0", "i7", "i8", "i9"]


def test_dedupe_keeps_earliest_row_before_the_filter():
    import pandas as pd

    base = [("a", f"i{k}", 1.0, float(k)) for k in range(9)]
    rows = pd.DataFrame(base + [("a", "i0", 1.0, 100.0)], columns=["user", "item", "rating", "timestamp"])
    kept = preprocess(rows, dataset="t", dedupe=False, min_user_interactions=10, num_eval_negatives=0, data_seed=0)
    assert kept.num_users == 1 and kept.test_items[0] == 0  # the duplicate i0 is the latest row
    with pytest.raises(Exception, match="no user has >= 10"):  # dedupe drops it, then the filter drops a
        preprocess(rows, dataset="t", dedupe=True, min_user_interactions=10, num_eval_negatives=0, data_seed=0)


def test_same_seed_byte_identical_artifact(mirror, tmp_path, monkeypatch):
    from fedem.config import load_config
    from fedem.data.pipeline import artifact_path, prepare

    monkeypatch.setenv("FEDEM_DATA_MIRROR", str(mirror))
    config = load_config(
        REPO / "config" / "config.yaml", [f"data.raw_dir={tmp_path}/raw", f"data.processed_dir={tmp_path}/processed"]
    )
    ds, _ = prepare(config, "ml-100k", dedupe=False)
    path = artifact_path(config, "ml-100k", False)
    first = path.read_bytes()
    ds2, _ = prepare(config, "ml-100k", dedupe=False, force=True)
    assert path.read_bytes() == first
    assert ds.content_hash == ds2.content_hash == hashlib.sha256(first).hexdigest() == ML100K_ARTIFACT_SHA256
    loaded = load_dataset(path)
    assert loaded.content_hash == ds.content_hash
    np.testing.assert_array_equal(loaded.eval_negatives, ds.eval_negatives)
    np.testing.assert_array_equal(loaded.item_ids, ds.item_ids)


def test_other_data_seed_changes_negatives_only(mirror):
    a, b = build(mirror, "filmtrust", False, 0), build(mirror, "filmtrust", False, 1)
    for name in ("train_indptr", "train_items", "val_items", "test_items", "user_ids", "item_ids"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert (a.eval_negatives != b.eval_negatives).mean() > 0.9


def test_corrupt_artifact_is_a_clear_error(tmp_path):
    from fedem.errors import DataError

    bad = tmp_path / "x.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="corrupt"):
        load_dataset(bad)
    with pytest.raises(DataError, match="prepare"):
        load_dataset(tmp_path / "missing.npz")


def test_synthetic_fixture_shape(tiny_dataset):
    assert tiny_dataset.num_users == 24 and tiny_dataset.eval_negatives.shape == (24, 20)
