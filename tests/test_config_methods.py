"""Method blocks: a variant is a config entry over a base method; roles and probes are declared there
and nowhere else; every block is checked against its base's hyper-parameters."""

from __future__ import annotations

import copy

import pytest

from fedem.config import load_config, probed_methods, run_config, validate
from fedem.errors import ConfigError
from fedem.report.provenance import expected_for

from conftest import REPO

CONFIG = REPO / "config" / "config.yaml"


@pytest.fixture
def config():
    return load_config(CONFIG)


def with_variant(config, **block):
    cfg = copy.deepcopy(config)
    cfg["methods"]["fedem-avg"] = {
        **copy.deepcopy(cfg["methods"]["fedem"]),
        "role": "ablation",
        "ablation_of": "fedem",
        "base": "fedem",
        "probes": False,
        **block,
    }
    return cfg


def test_a_variant_runs_its_base_with_its_own_values(config):
    cfg = validate(with_variant(config, agg_mode="avg"))
    rc = run_config(cfg, "authors", "fedem-avg")
    assert rc["method"]["base"] == "fedem" and rc["method"]["agg_mode"] == "avg"
    assert "role" not in rc["method"] and "probes" not in rc["method"]  # presentation, not training
    expected = expected_for(cfg)
    assert expected.code_hash("fedem-avg") == expected.code_hash("fedem")


def test_a_variant_is_checked_against_its_base(config):
    with pytest.raises(ConfigError, match=r"methods\.fedem-avg\.agg_mode"):
        validate(with_variant(config, agg_mode="median"))
    with pytest.raises(ConfigError, match=r"methods\.fedem-avg.*'surprise' was unexpected"):
        validate(with_variant(config, surprise=1))
    cfg = with_variant(config)
    cfg["methods"]["fedem-avg"]["base"] = "fedx"
    with pytest.raises(
        ConfigError,
        match="unknown method 'fedx' \\(its base\\); implemented: colr, em-plugin, fedcia, fedem, fedfast, fedmf, fedncf, fedrap, gpfedrec, lightgcn, local, mf, ncf, neg-count, pfedrec",
    ):
        validate(cfg)


def test_a_block_without_base_must_name_an_implemented_method(config):
    cfg = copy.deepcopy(config)
    cfg["methods"]["fedca"] = {"role": "learning"}
    with pytest.raises(ConfigError, match="unknown method 'fedca'.*base: <method>"):
        validate(cfg)


def test_per_method_training_overrides_reach_only_that_method(config):
    cfg = copy.deepcopy(config)
    cfg["methods"]["fedmf"]["training"] = {"local_epochs": 1, "batch_size": 2048}
    validate(cfg)
    assert run_config(cfg, "authors", "fedmf")["training"]["local_epochs"] == 1
    assert run_config(cfg, "authors", "fedmf")["training"]["batch_size"] == 2048
    assert run_config(cfg, "authors", "fedem")["training"]["local_epochs"] == 10
    cfg["methods"]["fedmf"]["training"] = {"eval_ks": [5]}  # the evaluation is the protocol's, shared
    with pytest.raises(ConfigError, match=r"methods\.fedmf\.training"):
        validate(cfg)
    cfg["methods"]["fedmf"]["training"] = {"local_epochs": 0}
    with pytest.raises(ConfigError, match=r"methods\.fedmf\.training\.local_epochs"):
        validate(cfg)


def test_optimizer_blocks_are_validated(config):
    cfg = copy.deepcopy(config)
    cfg["methods"]["fedmf"]["optimizer"] = {"name": "adagrad", "lr": {"embedding": 0.1}}
    with pytest.raises(ConfigError, match=r"methods\.fedmf\.optimizer\.name"):
        validate(cfg)
    cfg["methods"]["fedmf"]["optimizer"] = {"name": "sgd", "lr": {"embedding": -1}}
    with pytest.raises(ConfigError, match=r"methods\.fedmf\.optimizer\.lr\.embedding"):
        validate(cfg)


def test_roles_and_probes_come_from_the_config(config):
    assert probed_methods(config) == ("fedem",)
    assert [m for m, b in config["methods"].items() if b["role"] == "sanity"] == ["neg-count"]
    assert [m for m, b in config["methods"].items() if b["role"] == "proposed"] == ["fedem"]
    cfg = copy.deepcopy(config)
    del cfg["methods"]["local"]["role"]
    with pytest.raises(ConfigError, match=r"methods\.local.*'role' is a required property"):
        validate(cfg)


def test_smoke_config_holds_only_what_differs(config):
    smoke = load_config(REPO / "config" / "smoke.yaml")
    text = (REPO / "config" / "smoke.yaml").read_text()
    assert "inherits: config.yaml" in text and "\nadam:" not in text
    # the one method setting it changes: FedCIA's alignment steps (config/smoke.yaml says why)
    assert smoke["methods"]["fedcia"]["align_steps"] == 25 != config["methods"]["fedcia"]["align_steps"]
    smoke["methods"]["fedcia"]["align_steps"] = config["methods"]["fedcia"]["align_steps"]
    assert smoke["methods"] == config["methods"] and smoke["training"]["rounds"] == 3
