"""The leak of the authors' protocol (PROTOCOL.md §6), measured by the no-learning neg-count scorer."""

import pytest

from fedem.config import load_config, run_config
from fedem.data.pipeline import prepare
from fedem.engine.federation import run_federation

from conftest import REPO


@pytest.mark.parametrize("protocol,lo,hi", [("authors", 0.80, 0.86), ("clean", 0.0, 0.10)])
def test_neg_count_on_filmtrust_after_100_rounds(mirror, tmp_path, monkeypatch, protocol, lo, hi):
    monkeypatch.setenv("FEDEM_DATA_MIRROR", str(mirror))
    config = load_config(
        REPO / "config" / "config.yaml", [f"data.raw_dir={tmp_path}/raw", f"data.processed_dir={tmp_path}/p"]
    )
    rc = run_config(config, protocol, "neg-count")
    rc["training"]["full_ranking"] = False
    ds, _ = prepare(config, "filmtrust", rc["protocol"]["dedupe"])
    body = run_federation(ds, "neg-count", rc, seed=0, progress=False)
    hr = body["rounds"][-1]["test"]["hr@10"]
    assert lo <= hr <= hi, f"{protocol}: neg-count HR@10 {hr:.3f} after 100 rounds"
