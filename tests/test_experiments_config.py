"""The experiments' config: variants inherit their base's block, the experiment lists are checked, and
fedem's switches are validated before any training."""

from __future__ import annotations

import copy

import pytest
import torch

from fedem.config import experiment_methods, load_config, method_block, planned_seeds, run_config, validate
from fedem.errors import ConfigError
from fedem.methods import get_method
from fedem.methods.base import MethodContext

from conftest import REPO, tiny_run_config

CONFIG = REPO / "config" / "config.yaml"


@pytest.fixture
def config():
    return load_config(CONFIG)


def test_a_variant_inherits_what_it_does_not_set(config):
    block = method_block(config, "fedem-L2")
    base = config["methods"]["fedem"]
    assert block["adapter_layers"] == [32, 16, 1]
    assert block["alpha"] == base["alpha"] and block["optimizer"] == base["optimizer"]
    assert block["role"] == "ablation" and "probes" not in block  # presentation keys are the variant's own
    rc = run_config(config, "clean", "fedem-static")
    assert rc["method"]["merge"] == "static" and rc["method"]["static_rho"] == 0.5
    assert rc["method"]["agg_clients_ratio"] == base["agg_clients_ratio"]


def test_a_variant_merges_nested_blocks_key_by_key(config):
    cfg = copy.deepcopy(config)
    cfg["methods"]["fedem-lr"] = {
        "base": "fedem",
        "role": "ablation",
        "ablation_of": "fedem",
        "optimizer": {"lr": {"adapter": 0.01}},
    }
    rc = run_config(validate(cfg), "authors", "fedem-lr")
    assert rc["method"]["optimizer"] == {"name": "adam", "lr": {"embedding": 0.1, "adapter": 0.01}}


def test_experiment_runs_are_planned_with_their_seeds(config):
    methods = experiment_methods(config)
    assert methods["ablation"][0] == "fedmf" and "fedem" in methods["ablation"]
    assert planned_seeds(config, "fedem-L1") == {0, 1, 2}
    assert planned_seeds(config, "fedem-replace") == {0, 1, 2, 3, 4}
    assert planned_seeds(config, "fedem") == {0, 1, 2, 3, 4}


def test_fewer_seeds_narrow_one_method_on_one_dataset_only(config):
    cfg = copy.deepcopy(config)
    cfg["grid"]["fewer_seeds"] = {"colr": {"lastfm-2k": [0, 2]}, "fedmf": {"lastfm-2k": [0]}}
    validate(cfg)
    assert planned_seeds(cfg, "colr", "lastfm-2k") == {0, 2}
    assert planned_seeds(cfg, "colr", "ml-100k") == {0, 1, 2, 3, 4}
    # fedmf is also the ablation's bottom rung and the plug-in's host (seeds 0-4): the experiments keep theirs
    assert planned_seeds(cfg, "fedmf", "lastfm-2k") == {0, 1, 2, 3, 4}
    assert planned_seeds(config, "fedcia", "lastfm-2k") == {0}  # the shipped config
    cfg["grid"]["seeds"] = [1, 2]  # a narrower grid keeps what both allow
    assert planned_seeds(cfg, "colr", "lastfm-2k") == {2}
    cfg["grid"]["seeds"] = config["grid"]["seeds"]
    cfg["grid"]["fewer_seeds"] = {}
    assert planned_seeds(cfg, "fedcia", "lastfm-2k") == {0, 1, 2, 3, 4}


def test_an_experiment_narrowed_to_some_datasets_plans_its_variants_there_only(config):
    from fedem.report.layout import experiment_runs, grid_runs

    cfg = copy.deepcopy(config)
    cfg["experiments"]["ldp"]["datasets"] = ["filmtrust", "ml-100k"]
    validate(cfg)
    assert {k.dataset for k in experiment_runs(cfg, "ldp")} == {"filmtrust", "ml-100k"}
    assert planned_seeds(cfg, "pfedrec-ldp0.1", "lastfm-2k") == set()
    assert planned_seeds(cfg, "pfedrec-ldp0.1", "filmtrust") == {0, 1, 2}
    assert planned_seeds(cfg, "pfedrec", "lastfm-2k") == {0, 1, 2, 3, 4}  # its Table-1 runs stay
    planned = grid_runs(cfg)
    assert not [k for k in planned if k.method == "gpfedrec-ldp0.3" and k.dataset == "amazon-video"]
    assert len(planned) < len(grid_runs(config))
    assert {k.dataset for k in experiment_runs(config, "ldp")} == set(config["grid"]["datasets"])  # default


@pytest.mark.parametrize(
    "edit,message",
    [
        (
            lambda c: c["experiments"]["ablation"]["ladder"].append("fedem-nope"),
            r"experiments\.ablation\.ladder': method 'fedem-nope' has no block",
        ),
        (
            lambda c: c["experiments"]["sensitivity"]["sweeps"]["alpha"].append("fedmf"),
            r"experiments\.sensitivity\.sweeps\.alpha': a sweep holds fedem variants only",
        ),
        (
            lambda c: c["experiments"]["ldp"]["series"][0].append("fedmf"),
            r"experiments\.ldp\.series\.0': the variants of one method with an upload-noise switch",
        ),
        (
            lambda c: c["experiments"]["sensitivity"]["sweeps"].update({"lr": ["fedem"]}),
            r"experiments\.sensitivity\.sweeps",
        ),
        (lambda c: c["methods"]["fedem-static"].pop("static_rho"), r"methods\.fedem-static.*static_rho"),
        (lambda c: c["methods"]["fedem-replace"].update(static_rho=0.2), r"methods\.fedem-replace"),
        (lambda c: c["methods"]["fedem-dynamic"].update(merge="soft"), r"methods\.fedem-dynamic\.merge"),
        (lambda c: c["methods"]["fedem-ldp0.1"].update(upload_noise=-1), r"methods\.fedem-ldp0\.1\.upload_noise"),
        (lambda c: c["methods"]["fedem-L1"].update(base="fedx"), r"unknown method 'fedx'"),
        (
            lambda c: c["experiments"]["plugin"]["methods"].append("fedmf"),
            r"experiments\.plugin\.methods': 'fedmf' is not a plug-in variant",
        ),
        (lambda c: c["methods"]["pfedrec-em"].update(lr_eta=-1), r"methods\.pfedrec-em\.lr_eta"),
        (lambda c: c["methods"]["pfedrec-em"].update(adapter_lr=0), r"methods\.pfedrec-em\.adapter_lr"),
        (
            lambda c: c["methods"]["fedmf-em"].update(host="fedx"),
            r"methods\.fedmf-em\.host': the plug-in's host 'fedx'",
        ),
        (lambda c: c["methods"]["fedmf-em"].update(host="local"), r"methods\.fedmf-em\.host"),
        (
            lambda c: c["grid"]["fewer_seeds"].update(fedx={"ml-100k": [0]}),
            r"grid\.fewer_seeds\.fedx': method 'fedx' has no block",
        ),
        (
            lambda c: c["grid"]["fewer_seeds"].update(fedmf={"ml-10m": [0]}),
            r"grid\.fewer_seeds\.fedmf\.ml-10m': unknown dataset",
        ),
        (lambda c: c["grid"]["fewer_seeds"].update(fedmf={"ml-100k": []}), r"grid\.fewer_seeds"),
        (
            lambda c: c["experiments"]["ldp"].update(datasets=["filmtrust", "ml-10m"]),
            r"experiments\.ldp\.datasets': ml-10m not in grid\.datasets",
        ),
        (lambda c: c["experiments"]["plugin"].update(datasets=[]), r"experiments\.plugin\.datasets"),
        (
            lambda c: c["experiments"]["ldp"].update(chosen_by="leaky"),
            r"experiments\.ldp\.chosen_by': 'leaky' is not a grid protocol; valid: authors, clean",
        ),
        (lambda c: c["experiments"]["ldp"].pop("chosen_by"), r"experiments\.ldp.*chosen_by"),
    ],
)
def test_bad_experiment_config_is_rejected_naming_the_key(config, edit, message):
    cfg = copy.deepcopy(config)
    edit(cfg)
    with pytest.raises(ConfigError, match=message):
        validate(cfg)


def test_a_variant_whose_base_has_no_block_is_rejected(config):
    cfg = copy.deepcopy(config)
    del cfg["methods"]["gpfedrec"]
    del cfg["methods"]["gpfedrec-em"]  # a plug-in variant names its host's missing block first
    cfg["experiments"]["plugin"]["methods"].remove("gpfedrec-em")
    cfg["methods"]["gpfedrec-dp"] = {"base": "gpfedrec", "role": "ablation", "ablation_of": "fedem", "dp": 0.1}
    cfg["grid"]["methods"].remove("gpfedrec")
    with pytest.raises(
        ConfigError, match=r"methods\.gpfedrec-[a-z0-9.]+\.base': the variant's base 'gpfedrec' has no block"
    ):
        validate(cfg)


def test_a_snapshot_round_past_the_run_is_rejected_before_training(tiny_dataset):
    rc = tiny_run_config("fedem")
    rc["method"]["snapshot_round"] = rc["training"]["rounds"]
    with pytest.raises(ConfigError, match=r"methods\.fedem\.snapshot_round=3: the run has only 3 rounds"):
        get_method("fedem")(MethodContext(tiny_dataset, rc, 0, torch.device("cpu")))
