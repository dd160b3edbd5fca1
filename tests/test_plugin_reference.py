"""FedEM's merging plugged into FedMF, PFedRec, GPFedRec and FedRAP (Table 3) equals its plain
per-client reference, and a plugged method's round 0 (no table of its own yet) is its host's round 0,
bit for bit."""

from __future__ import annotations

import pytest
import torch
from reference_plugin import RefPlugged, RefPluggedFedRAP, RefPluggedGPFedRec
from test_baselines_reference import FEDRAP_LR

from fedem.config import PLUGIN_KEYS as CONFIG_PLUGIN_KEYS
from fedem.methods import get_method
from fedem.methods.base import MethodContext
from fedem.methods.emplugin import HOSTS, PLUGIN_KEYS, Merged
from fedem.methods.merging import ElasticRule
from fedem.training.backbones import FCF

from conftest import round_data, tiny_run_config

ATOL = 1e-4
# (plugged method, training overrides): fedmf's host early-stops (clients stop at different epochs),
# pfedrec trains its one epoch with SGD (the adapter takes SGD steps too)
CASES = [
    ("fedmf-em", {"early_stop_threshold": 0.05}),
    ("fedmf-em", {"early_stop_threshold": 0.05, "kernels": "autograd"}),
    ("pfedrec-em", {"local_epochs": 1}),
    # the hosts with their own loop: gpfedrec's pull toward r_u, fedrap's early stop, weight decay and
    # per-step lr decay (the adapter's step has none of them)
    ("gpfedrec-em", {"local_epochs": 1}),
    ("fedrap-em", {"early_stop_threshold": 0.1, "local_epochs": 5}),
]
# fedrap's case runs at the table lr of its Table-1 reference test (test_baselines_reference.FEDRAP_LR):
# at the released 200 the unbounded -lambda MSE term grows the tables until float32 roundoff exceeds atol
METHOD_OVERRIDES = {"fedrap-em": {"optimizer": FEDRAP_LR}}
REFERENCES = {"gpfedrec-em": RefPluggedGPFedRec, "fedrap-em": RefPluggedFedRAP}


def close(mine, theirs):
    torch.testing.assert_close(mine, theirs, atol=ATOL, rtol=1e-4)


@pytest.mark.parametrize("method,training", CASES)
def test_plugged_method_matches_per_client_reference(tiny_dataset, method, training):
    ds, seed = tiny_dataset, 3
    rc = tiny_run_config(method, **training)
    rc["method"].update(METHOD_OVERRIDES.get(method, {}))
    engine = get_method("em-plugin")(MethodContext(ds, rc, seed, torch.device("cpu")))
    ref = REFERENCES.get(method, RefPlugged)(ds, rc, seed)
    candidates = torch.cat([torch.from_numpy(ds.test_items)[:, None], torch.from_numpy(ds.eval_negatives)], 1)
    users = torch.arange(ds.num_users)
    for t in range(rc["training"]["rounds"]):
        negatives, samples = round_data(ds, rc, seed, t)
        losses = engine.train_round(t, samples, negatives)
        ref_losses = ref.train_round(t, samples)
        close(losses, torch.tensor([ref_losses[u] for u in range(ds.num_users)], dtype=torch.float64))
        scores = engine.score(users, candidates)
        close(scores, ref.scores(candidates))
        torch.testing.assert_close(engine.score_all(users).gather(1, candidates), scores)
    ref.check_state(engine, close)


@pytest.mark.parametrize("host", sorted(HOSTS))
def test_round_zero_is_the_hosts(tiny_dataset, host):
    ds, seed = tiny_dataset, 4
    rc = tiny_run_config(f"{host}-em", rounds=1)
    plugged = get_method("em-plugin")(MethodContext(ds, rc, seed, torch.device("cpu")))
    own = get_method(host)(MethodContext(ds, tiny_run_config(host, rounds=1), seed, torch.device("cpu")))
    negatives, samples = round_data(ds, rc, seed, 0)
    assert torch.equal(plugged.train_round(0, samples, negatives), own.train_round(0, samples, negatives))
    # the mean of the whole uploaded tables vs the host's scatter of its pool rows' changes: roundoff apart
    torch.testing.assert_close(plugged.global_table, getattr(own, HOSTS[host].table), atol=1e-6, rtol=1e-6)


def test_merged_backbone_finds_the_one_shared_table_and_keys_agree():
    merged = Merged(FCF(items_shared=True), ElasticRule([32, 16, 8, 1]))
    assert merged.table == "items" and "global_items" in [s.name for s in merged.specs]
    with pytest.raises(Exception, match="exactly one shared item table"):
        Merged(FCF(items_shared=False), ElasticRule([32, 16, 8, 1]))
    assert PLUGIN_KEYS == CONFIG_PLUGIN_KEYS
