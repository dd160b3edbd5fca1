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
