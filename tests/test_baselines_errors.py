"""The Table-1 baselines reject bad hyper-parameters before training, naming the key, and a diverging
run stops naming the method and the round."""

from __future__ import annotations

import copy

import pytest
import torch

from fedem.config import load_config, run_config, validate
from fedem.engine.federation import run_federation
from fedem.errors import ConfigError, TrainingError
from fedem.methods import get_method
from fedem.methods.base import MethodContext

from conftest import REPO, tiny_run_config

CONFIG = load_config(REPO / "config" / "config.yaml")


def with_block(method: str, path: str, value):
    cfg = copy.deepcopy(CONFIG)
    node = cfg["methods"][method]
    *parents, leaf = path.split(".")
    for key in parents:
        node = node[key]
    node[leaf] = value
    return cfg


@pytest.mark.parametrize(
    "method,path,value,named",
    [
        ("pfedrec", "lr_eta", 0, "methods.pfedrec.lr_eta"),
        ("pfedrec", "optimizer.lr", {"embedding": 0.1}, "methods.pfedrec.optimizer.lr"),
        ("fedncf", "optimizer.lr", {"embedding": 0.1, "tower": 0.1}, "methods.fedncf.optimizer.lr"),
        ("fedncf", "hidden", [8], "methods.fedncf"),
        ("fedrap", "optimizer.name", "adam", "methods.fedrap.optimizer.name"),
        ("fedrap", "curriculum", "sin", "methods.fedrap.curriculum"),
        ("fedrap", "regular", "nuc", "methods.fedrap.regular"),
        ("fedrap", "optimizer.step_decay", 1.5, "methods.fedrap.optimizer.step_decay"),
        ("gpfedrec", "graph", "cosine", "methods.gpfedrec.graph"),
        ("gpfedrec", "mp_layers", 0, "methods.gpfedrec.mp_layers"),
        ("gpfedrec", "dp", -0.1, "methods.gpfedrec.dp"),
        ("gpfedrec", "optimizer.lr", {"mlp": 0.1, "items": 0.1}, "methods.gpfedrec.optimizer.lr"),
        ("colr", "rank", 0, "methods.colr.rank"),
        ("fedcia", "align_steps", -1, "methods.fedcia.align_steps"),
        ("fedfast", "delegate_ratio", 1.5, "methods.fedfast.delegate_ratio"),
        ("fedfast", "clusters", 0, "methods.fedfast.clusters"),
        ("fedcia", "noise_scale", -0.001, "methods.fedcia.noise_scale"),
        ("colr", "optimizer.lr", {"update": 0.1}, "methods.colr.optimizer.lr"),
        ("mf", "init_std", 0, "methods.mf.init_std"),
        ("lightgcn", "layers", -1, "methods.lightgcn.layers"),
        ("ncf", "optimizer.name", "sgd", "methods.ncf.optimizer.name"),
    ],
)
def test_bad_hyper_parameters_are_rejected_naming_the_key(method, path, value, named):
    with pytest.raises(ConfigError, match=f"at '{named}"):
        validate(with_block(method, path, value))


@pytest.mark.parametrize("method", ["fedncf", "gpfedrec"])
def test_a_tower_that_does_not_read_concat_p_q_is_rejected_before_training(tiny_dataset, method):
    rc = tiny_run_config(method)
    rc["method"]["mlp_layers"] = [16, 8, 1]
    with pytest.raises(ConfigError, match=f"methods.{method}.mlp_layers"):
        get_method(method)(MethodContext(tiny_dataset, rc, 0, torch.device("cpu")))


def test_every_baseline_block_of_the_config_validates():
    cfg = validate(copy.deepcopy(CONFIG))
    for method in ("fedncf", "pfedrec", "fedrap", "gpfedrec", "colr", "fedfast", "fedcia", "mf", "ncf", "lightgcn"):
        assert run_config(cfg, "authors", method)["method"]["base"] == method


def test_fedrap_divergence_stops_the_run_naming_method_and_round(tiny_dataset):
    # without weight decay nothing holds the unbounded -lambda * MSE(D_u, C) term
    rc = tiny_run_config("fedrap")
    rc["method"]["lambda"] = 50.0
    rc["method"]["optimizer"]["weight_decay"] = {"head": 0.0, "tables": 0.0}
    rc["training"]["rounds"] = 5
    with pytest.raises(TrainingError, match=r"method 'fedrap' diverged in round \d"):
        run_federation(tiny_dataset, "fedrap", rc, seed=0, progress=False)
