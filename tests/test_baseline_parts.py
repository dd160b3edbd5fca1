"""Building blocks of the baselines checked on their own: FedFast's torch k-means against scikit-learn's,
its ActvSAMP draw, CoLR's shared basis, FedCIA's exact noise sum and eigenbasis alignment step,
GPFedRec's half-computed Gram."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.cluster import KMeans

from fedem.methods.colr import correlated_basis
from fedem.methods.fedcia import align
from fedem.methods.fedfast import active_sample, kmeans
from fedem.methods.gpfedrec import symmetric_gram
from fedem.rng import torch_gen


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = {(int(x), int(y)) for x, y in zip(a, b)}
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_kmeans_finds_the_partition_scikit_learn_finds():
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=10, size=(6, 16))
    x = np.concatenate([c + rng.normal(size=(40, 16)) for c in centres])
    ours = kmeans(torch.from_numpy(x).float(), 6, torch_gen(0, "t"), 50).numpy()
    theirs = KMeans(6, n_init=10, random_state=0).fit_predict(x)
    assert same_partition(ours, theirs)
    again = kmeans(torch.from_numpy(x).float(), 6, torch_gen(0, "t"), 50).numpy()
    assert np.array_equal(ours, again)  # deterministic for one generator


def test_active_sample_draws_equal_numbers_per_cluster():
    labels = np.repeat(np.arange(4), [50, 30, 3, 17])
    picked = active_sample(labels, 4, 0.1, np.random.default_rng(0))
    per = np.bincount(labels[picked], minlength=4)
    # m = floor(0.1 * 100) + 1 = 11, floor(11 / 4) + 1 = 3 per cluster, capped by the cluster size
    assert per.tolist() == [3, 3, 3, 3] and len(set(picked.tolist())) == len(picked)


def test_colr_basis_is_scaled_orthonormal_and_shared():
    b = correlated_basis(4, 16, seed=1, round_index=7)
    torch.testing.assert_close(b @ b.T, torch.eye(4) * 4.0, atol=1e-5, rtol=0)
    assert torch.equal(b, correlated_basis(4, 16, seed=1, round_index=7))
    assert not torch.equal(b, correlated_basis(4, 16, seed=1, round_index=8))


def test_fedcia_alignment_equals_autograd_on_the_frobenius_loss():
    gen = torch.Generator().manual_seed(0)
    tables = torch.randn(3, 12, 4, generator=gen)
    target = torch.randn(12, 12, generator=gen)  # not symmetric, as a noisy mean is not
    expected = []
    for q0 in tables:
        q = q0.clone().requires_grad_()
        opt = torch.optim.SGD([q], lr=0.05, weight_decay=1e-3)
        for _ in range(20):
            opt.zero_grad()
            torch.norm(q @ q.T - target).backward()
            opt.step()
        expected.append(q.detach())
    align(tables, target, steps=20, lr=0.05, wd=1e-3)
    torch.testing.assert_close(tables, torch.stack(expected), atol=1e-4, rtol=1e-4)


def test_gpfedrec_symmetric_gram_equals_the_full_product():
    x = torch.randn((13, 40), generator=torch_gen(0, "t"), dtype=torch.float64)
    for block in (1, 4, 5, 13, 64):  # blocks that divide n, that do not, and one past it
        gram = symmetric_gram(x, block)
        torch.testing.assert_close(gram, x @ x.T, rtol=1e-12, atol=1e-12)
        assert torch.equal(gram, gram.T)


def test_fedcia_alignment_stays_exact_once_a_table_is_aligned():
    # Tables almost aligned with S: f = ||Q Q^T - S|| ~ 1e-3 ||S||, so f^2 is ~1e-6 of the terms the
    # eigenbasis form subtracts to get it. A step must still follow the direct loss (float64 autograd
    # here): 1e-4 off; with f^2 from float32 terms, 9e-3 off, and blown up when f is smaller still. One
    # step: near alignment the steps oscillate and amplify any rounding (of the float32 rotation too).
    gen = torch.Generator().manual_seed(3)
    m, d = 300, 8
    shared = torch.randn(m, d, generator=gen)
    tables = torch.stack([shared + 1e-3 * torch.randn(m, d, generator=gen) for _ in range(2)])
    z = tables.double()
    target = (
        (z[0] @ z[0].T + z[1] @ z[1].T) / 2 + 1e-5 * torch.randn(m, m, generator=gen, dtype=torch.float64)
    ).float()
    expected = []
    for q0 in tables:
        q = q0.double().clone().requires_grad_()
        torch.norm(q @ q.T - target.double()).backward()
        expected.append((q - 0.1 * (q.grad + 1e-3 * q)).detach().float())  # one SGD step, weight decay 1e-3
    align(tables, target, steps=1, lr=0.1, wd=1e-3)
    assert bool(torch.isfinite(tables).all())
    torch.testing.assert_close(tables, torch.stack(expected), atol=1e-3, rtol=0)
