"""Aggregation-bottleneck probes agree with the engine's own evaluation of the same models."""

import torch

from fedem.data.negatives import TrainNegativeSampler
from fedem.engine.evaluation import Evaluator
from fedem.engine.federation import run_federation
from fedem.methods import get_method
from fedem.methods.base import MethodContext
from fedem.metrics import sampled_ranks
from fedem.training.schedule import make_round_samples

from conftest import tiny_run_config


def test_probe_merged_equals_evaluation_and_divergence_is_exact(tiny_dataset):
    ds = tiny_dataset
    rc = tiny_run_config("fedem")
    method = get_method("fedem")(MethodContext(ds, rc, 5, torch.device("cpu")))
    evaluator = Evaluator(ds, torch.device("cpu"), [10])
    sampler = TrainNegativeSampler(ds, "unobserved", 4)
    for t in range(2):
        neg = sampler.sample(5, t)
        samples = make_round_samples(ds.train_indptr, ds.train_items, neg, 3, 8, 5, t, torch.device("cpu"))
        method.train_round(t, samples, neg)
        records = method.probe_round(t, evaluator.probe_items)
        clients = method.g_clients
        assert [r["client"] for r in records] == clients.tolist() and len(records) == int(0.25 * ds.num_users)
        scores = method.score(evaluator.users, evaluator.candidates["val"])
        ranks = sampled_ranks(scores[:, 0], scores[:, 1:])
        for rec in records:
            u = rec["client"]
            assert rec["merged"]["val_rank"] == int(ranks[u])  # the engine scores S clients merged
            j = clients.tolist().index(u)
            g, local = method.g_tables[j], method.tables[u]
            assert abs(rec["divergence"] - float((g - local).norm() / local.norm())) < 1e-5
            assert 0 <= rec["rho_quantiles"][0] <= rec["rho_quantiles"][2] <= rec["rho_quantiles"][-1] <= 1
            assert rec["data_size"] == int(ds.train_counts[u])
            for model in ("local", "aggregated", "merged"):
                assert rec[model]["val_hr@10"] == float(rec[model]["val_rank"] <= 10)


def test_probe_is_recorded_by_the_engine(tiny_dataset):
    rc = tiny_run_config("fedem")
    rc["probe"]["enabled"] = True
    body = run_federation(tiny_dataset, "fedem", rc, seed=0, progress=False)
    rounds = {r["round"] for r in body["probe_records"]}
    assert rounds == {0, 1, 2}
