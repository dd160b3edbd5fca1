"""A processed artifact is keyed by every setting that shapes it, and a run refuses one made with other
settings (an edited data setting once reused the cached artifact silently)."""

from __future__ import annotations

import shutil

import pytest

from fedem.config import load_config
from fedem.data.pipeline import artifact_path, prepare, stats_path
from fedem.errors import DataError

from conftest import REPO


@pytest.fixture
def config(tmp_path, mirror):
    cfg = load_config(REPO / "config" / "config.yaml")
    cfg["data"].update(
        processed_dir=str(tmp_path / "processed"),
        raw_dir=str(tmp_path / "raw"),
        mirror=str(mirror),
        allow_download=False,
    )
    return cfg


def with_data(config, **data):
    return {**config, "data": {**config["data"], **data}}


def test_every_shaping_setting_gets_its_own_artifact(config):
    base = artifact_path(config, "filmtrust", False)
    for key, value in (("min_user_interactions", 40), ("num_eval_negatives", 50), ("data_seed", 1)):
        assert artifact_path(with_data(config, **{key: value}), "filmtrust", False) != base, key
    assert artifact_path(config, "filmtrust", True) != base


def test_a_data_setting_change_builds_another_dataset(config):
    ds10, _ = prepare(config, "filmtrust", dedupe=False)
    ds40, stats40 = prepare(with_data(config, min_user_interactions=40), "filmtrust", dedupe=False)
    assert ds10.num_users == 1002  # PROTOCOL.md §2 count
    assert ds40.num_users < ds10.num_users and ds40.content_hash != ds10.content_hash
    assert stats40["settings"]["min_user_interactions"] == 40 and ds40.meta["min_user_interactions"] == 40
    neg50, _ = prepare(with_data(config, num_eval_negatives=50), "filmtrust", dedupe=False)
    assert neg50.eval_negatives.shape == (1002, 50)


def test_an_artifact_made_with_other_settings_is_refused(config):
    prepare(config, "filmtrust", dedupe=False)
    other = with_data(config, min_user_interactions=40)
    src, dst = artifact_path(config, "filmtrust", False), artifact_path(other, "filmtrust", False)
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, dst)  # a stale or renamed cache file under the name the new settings expect
    shutil.copy(stats_path(src), stats_path(dst))
    with pytest.raises(
        DataError, match=r"made with other settings: min_user_interactions=10 \(the config asks for 40\)"
    ):
        prepare(other, "filmtrust", dedupe=False)


def test_impossible_eval_negative_count_fails_before_training(config):
    with pytest.raises(DataError, match="fewer than num_eval_negatives=5000"):
        prepare(with_data(config, num_eval_negatives=5000), "filmtrust", dedupe=False)
    assert not artifact_path(with_data(config, num_eval_negatives=5000), "filmtrust", False).exists()
