"""The centralised references against plain torch loops (nn.Embedding, nn.Linear, torch.optim.Adam over
the same shuffled epoch), and LightGCN's sparse propagation against a dense matrix product."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedem.data.negatives import TrainNegativeSampler
from fedem.methods import get_method
from fedem.methods.base import MethodContext
from fedem.methods.lightgcn import normalised_adjacency, propagate
from fedem.rng import torch_gen

from conftest import tiny_run_config

ROUNDS = 3


def engine_and_negatives(ds, method, seed=2, **training):
    rc = tiny_run_config(method, rounds=ROUNDS, **training)
    engine = get_method(method)(MethodContext(ds, rc, seed, torch.device("cpu")))
    sampler = TrainNegativeSampler(ds, "unobserved", rc["training"]["num_negatives"])
    return rc, engine, [sampler.sample(seed, t) for t in range(ROUNDS)]


class PlainNCF(torch.nn.Module):
    def __init__(self, engine):
        super().__init__()
        p = {n: t.detach().clone() for n, t in engine.params.items()}
        self.user = torch.nn.Embedding.from_pretrained(p["user"], freeze=False)
        self.item = torch.nn.Embedding.from_pretrained(p["items"], freeze=False)
        tower = [p[f"mlp.{i}"] for i in range(len(p) - 2)]
        layers = []
        for k in range(len(tower) // 2):
            lin = torch.nn.Linear(tower[2 * k].shape[1], tower[2 * k].shape[0])
            lin.weight.data.copy_(tower[2 * k])
            lin.bias.data.copy_(tower[2 * k + 1])
            layers += [lin, torch.nn.ReLU()]
        self.tower = torch.nn.Sequential(*layers[:-1])

    def forward(self, users, items):
        return torch.sigmoid(self.tower(torch.cat((self.user(users), self.item(items)), -1)).squeeze(-1))


class PlainMF(torch.nn.Module):
    def __init__(self, engine):
        super().__init__()
        self.user = torch.nn.Embedding.from_pretrained(engine.params["user"].detach().clone(), freeze=False)
        self.item = torch.nn.Embedding.from_pretrained(engine.params["items"].detach().clone(), freeze=False)

    def forward(self, users, items):
        return torch.sigmoid((self.user(users) * self.item(items)).sum(-1))


@pytest.mark.parametrize("method,plain", [("mf", PlainMF), ("ncf", PlainNCF)])
def test_mf_and_ncf_equal_a_plain_torch_loop(tiny_dataset, method, plain):
    ds = tiny_dataset
    rc, engine, negatives = engine_and_negatives(ds, method)
    model = plain(engine)
    lr = rc["method"]["optimizer"]["lr"]
    groups = [{"params": [model.user.weight, model.item.weight], "lr": lr["embedding"]}]
    if method == "ncf":
        groups.append({"params": list(model.tower.parameters()), "lr": lr["mlp"]})
    adam = torch.optim.Adam(groups)
    candidates = torch.cat([torch.from_numpy(ds.test_items)[:, None], torch.from_numpy(ds.eval_negatives)], 1)
    users_all = torch.arange(ds.num_users)
    for t in range(ROUNDS):
        # the plain loop draws its own epoch: every positive then its negatives, one global shuffle
        users = torch.from_numpy(np.repeat(np.arange(ds.num_users), np.diff(ds.train_indptr))).repeat_interleave(5)
        items = torch.cat([torch.from_numpy(ds.train_items)[:, None], torch.from_numpy(negatives[t])], 1).reshape(-1)
        labels = torch.tensor([1.0, 0, 0, 0, 0]).repeat(len(ds.train_items))
        order = torch.randperm(len(users), generator=torch_gen(2, "centralised-order", t))
        users, items, labels = users[order], items[order], labels[order]
        total = 0.0
        for lo in range(0, len(users), rc["training"]["batch_size"]):
            part = slice(lo, lo + rc["training"]["batch_size"])
            adam.zero_grad()
            loss = torch.nn.BCELoss()(model(users[part], items[part]), labels[part])
            loss.backward()
            adam.step()
            total += loss.item() * len(users[part])
        losses = engine.train_round(t, None, negatives[t])
        torch.testing.assert_close(losses, torch.full_like(losses, total / len(users)), atol=1e-6, rtol=1e-5)
        with torch.no_grad():
            expected = torch.stack([model(torch.full((candidates.shape[1],), u), candidates[u]) for u in users_all])
        torch.testing.assert_close(engine.score(users_all, candidates), expected, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(engine.score_all(users_all).gather(1, candidates), expected, atol=1e-5, rtol=1e-4)


def dense_propagation(ds, ego: torch.Tensor, layers: int) -> torch.Tensor:
    U, n = ds.num_users, ds.num_users + ds.num_items
    a = np.zeros((n, n))
    users = np.repeat(np.arange(U), np.diff(ds.train_indptr))
    a[users, U + ds.train_items] = 1.0  # duplicates count once
    a[U + ds.train_items, users] = 1.0
    deg = a.sum(1)
    inv = np.where(deg > 0, 1 / np.sqrt(np.maximum(deg, 1)), 0.0)
    norm = torch.from_numpy(inv[:, None] * a * inv[None, :]).float()
    out, h = ego.clone(), ego.clone()
    for _ in range(layers):
        h = norm @ h
        out = out + h
    return out / (layers + 1)


def test_lightgcn_propagation_equals_a_dense_matrix_product(tiny_dataset):
    ds = tiny_dataset
    adjacency = normalised_adjacency(
        np.repeat(np.arange(ds.num_users), np.diff(ds.train_indptr)), ds.train_items, ds.num_users, ds.num_items
    )
    ego = torch.randn(ds.num_users + ds.num_items, 8, generator=torch.Generator().manual_seed(0))
    for layers in (0, 1, 3):
        torch.testing.assert_close(
            propagate(adjacency, ego, layers), dense_propagation(ds, ego, layers), atol=1e-5, rtol=1e-5
        )


def test_lightgcn_epoch_equals_a_plain_bpr_loop(tiny_dataset):
    ds = tiny_dataset
    rc, engine, negatives = engine_and_negatives(ds, "lightgcn", batch_size=16)
    hp = rc["method"]
    ego = torch.nn.Parameter(engine.params["ego"].detach().clone())
    adam = torch.optim.Adam([ego], lr=hp["optimizer"]["lr"]["embedding"])
    U = ds.num_users
    for t in range(ROUNDS):
        users, pos, neg = engine.epoch_pairs(t, negatives[t])
        for lo in range(0, len(users), 16):
            u, i, j = users[lo : lo + 16], pos[lo : lo + 16] + U, neg[lo : lo + 16] + U
            adam.zero_grad()
            final = dense_propagation(ds, ego, hp["layers"])
            bpr = -torch.nn.functional.logsigmoid((final[u] * final[i]).sum(1) - (final[u] * final[j]).sum(1)).mean()
            reg = 0.5 * (ego[u].norm() ** 2 + ego[i].norm() ** 2 + ego[j].norm() ** 2) / len(u)
            (bpr + hp["reg_weight"] * reg).backward()
            adam.step()
        engine.train_round(t, None, negatives[t])
        torch.testing.assert_close(engine.params["ego"].detach(), ego.detach(), atol=1e-5, rtol=1e-4)
    final = dense_propagation(ds, ego.detach(), hp["layers"])
    candidates = torch.from_numpy(ds.eval_negatives)
    users = torch.arange(U)
    expected = (final[:U].unsqueeze(1) * final[U:][candidates]).sum(-1)
    torch.testing.assert_close(engine.score(users, candidates), expected, atol=1e-5, rtol=1e-4)


def test_lightgcn_adjacency_is_exactly_symmetric_and_its_gradient_is_torchs(tiny_dataset):
    # propagate's backward multiplies by A itself (not A^T): exact only for an exactly symmetric A
    ds = tiny_dataset
    adjacency = normalised_adjacency(
        np.repeat(np.arange(ds.num_users), np.diff(ds.train_indptr)), ds.train_items, ds.num_users, ds.num_items
    )
    dense = adjacency.to_dense()
    assert torch.equal(dense, dense.T)
    ego = torch.randn(ds.num_users + ds.num_items, 8, generator=torch.Generator().manual_seed(1))
    weights = torch.randn_like(ego)
    grads = []
    for prop in (propagate, lambda a, e, n: dense_propagation(ds, e, n)):
        leaf = ego.clone().requires_grad_()
        (prop(adjacency, leaf, 3) * weights).sum().backward()
        grads.append(leaf.grad)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-5)
