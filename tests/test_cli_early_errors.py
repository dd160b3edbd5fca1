"""Config errors that would otherwise come only after training; override values and config files read
floats as people type them."""

from __future__ import annotations

import pytest

from fedem.config import _parse_override, load_config
from fedem.errors import ConfigError

from conftest import REPO

CONFIG = REPO / "config" / "config.yaml"


def test_selection_metric_must_be_a_computed_metric():
    with pytest.raises(ConfigError, match=r"'training.selection_metric': 'hr@50' is not computed"):
        load_config(CONFIG, ["training.selection_metric=hr@50"])
    assert load_config(CONFIG, ["training.selection_metric=ndcg@20"])["training"]["selection_metric"] == "ndcg@20"
    cfg = load_config(CONFIG, ["training.eval_ks=[10, 50]", "training.selection_metric=hr@50"])
    assert cfg["training"]["selection_metric"] == "hr@50"


@pytest.mark.parametrize("raw,value", [("1e-3", 1e-3), ("1E-3", 1e-3), ("-2.5e+4", -2.5e4), (".5", 0.5),
                                       ("5.", 5.0), ("1.0e-4", 1e-4), ("+3e2", 300.0)])
def test_override_floats_as_typed(raw, value):
    parsed = _parse_override(f"methods.fedem.lr_embedding={raw}")[1]
    assert type(parsed) is float and parsed == value
    assert load_config(CONFIG, [f"adam.eps={raw.lstrip('-')}"])["adam"]["eps"] == abs(value)


@pytest.mark.parametrize("raw,value", [("5", 5), ("-3", -3), ("hr@10", "hr@10"), ("1e", "1e"), ("e5", "e5"),
                                       ("ml-1m", "ml-1m"), ("1.5.2", "1.5.2"), ("true", True), ("[1e-3, 2]", [1e-3, 2])])
def test_override_other_values_keep_their_type(raw, value):
    parsed = _parse_override(f"x.y={raw}")[1]
    assert parsed == value and type(parsed) is type(value)


def test_config_file_floats_as_typed(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG.read_text().replace("    lr_embedding: 0.1               # user", "    lr_embedding: 1e-3  # user"))
    cfg = load_config(path)
    assert cfg["methods"]["fedem"]["lr_embedding"] == 1e-3 and cfg["training"]["rounds"] == 100
    assert load_config(CONFIG, ["methods.fedem.lr_embedding=1e-3"])["methods"]["fedem"]["lr_embedding"] == 1e-3
