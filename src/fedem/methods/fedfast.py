"""`fedfast`: FedFast (Muhammad et al., KDD 2020), OUR IMPLEMENTATION of the paper on FCF (no official
code exists; docs/methods/fedfast.md).

The user embeddings live on the server (FedFast's shared model holds them). Round 0 is a FedAvg warm-up
over every user, then the users are clustered (k-means on their embeddings). Every later round:
ActvSAMP draws the same number of delegates from each cluster; only the delegates train (from the
current global model); ActvAGG sets each item row to the delegates' rows weighted by how much each
delegate changed it (L1), writes the delegates' user rows back, re-clusters all users, and moves every
other user of a cluster with delegates by gamma_t times the mean change of that cluster's delegates."""

from __future__ import annotations

import math

import numpy as np
import torch

from fedem.methods.aggregation import fedavg_rows
from fedem.methods.base import Method, MethodContext
from fedem.rng import numpy_rng, torch_gen
from fedem.training.backbones import FCF, fcf_scores, init_fcf
from fedem.training.schedule import RoundSamples
from fedem.training.state import ClientState
from fedem.training.trainer import train_clients


def kmeans(x: torch.Tensor, k: int, gen: torch.Generator, iterations: int) -> torch.Tensor:
    """Labels [n] of Lloyd's k-means on x [n, d] from a k-means++ start drawn with `gen` (CPU generator);
    a cluster that empties keeps its centre. Deterministic for a given generator."""
    n = x.shape[0]
    k = min(k, n)
    data = x.double().cpu()
    centres = [data[int(torch.randint(n, (1,), generator=gen))]]
    dist = (data - centres[0]).square().sum(1)
    for _ in range(1, k):
        weights = dist / dist.sum() if float(dist.sum()) > 0 else torch.full((n,), 1.0 / n, dtype=torch.float64)
        pick = int(torch.multinomial(weights, 1, generator=gen))
        centres.append(data[pick])
        dist = torch.minimum(dist, (data - data[pick]).square().sum(1))
    centres = torch.stack(centres)
    labels = torch.cdist(data, centres).argmin(1)
    for _ in range(iterations):
        sums = torch.zeros_like(centres).index_add_(0, labels, data)
        counts = torch.bincount(labels, minlength=k).to(data.dtype)
        centres = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], centres)
        new = torch.cdist(data, centres).argmin(1)
        if torch.equal(new, labels):
            break
        labels = new
    return labels.to(x.device)


def active_sample(labels: np.ndarray, clusters: int, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """ActvSAMP: m = max(1, floor(ratio N) + 1); from each cluster min(floor(m / p) + 1, its size) users,
    uniformly without replacement. Sorted user ids."""
    m = max(1, math.floor(ratio * len(labels)) + 1)
    per_cluster = m // clusters + 1
    chosen = []
    for c in range(clusters):
        members = np.flatnonzero(labels == c)
        if len(members):
            chosen.append(rng.choice(members, size=min(per_cluster, len(members)), replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64)


class FedFast(Method):
    name = "fedfast"

    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        items, user = init_fcf(self.num_items, ctx.training["latent_dim"], ctx.seed)
        self.backbone = FCF(items_shared=True)
        self.item_table = items.to(self.device)
        self.state = ClientState.from_template({"user": user}, self.num_users, self.device)  # the server's user rows
        self.labels = None

    @property
    def user_emb(self) -> torch.Tensor:
        return self.state["user"]

    def _cluster(self, round_index: int) -> torch.Tensor:
        hp = self.ctx.hparams
        gen = torch_gen(self.ctx.seed, "fedfast-kmeans", round_index)
        return kmeans(self.user_emb, hp["clusters"], gen, hp["kmeans_iterations"])

    def _delegates(self, round_index: int) -> torch.Tensor:
        hp = self.ctx.hparams
        rng = numpy_rng(self.ctx.seed, "fedfast-sample", round_index)
        return torch.from_numpy(active_sample(self.labels.cpu().numpy(), hp["clusters"], hp["delegate_ratio"], rng))

    def prefetch(self, round_index: int, samples: RoundSamples) -> None:
        if round_index == 0:
            samples.plan()  # later rounds' delegates depend on the clustering, i.e. on training

    def _train(self, plan):
        pool_items = plan.pool_items.to(self.device)
        received = self.item_table[pool_items]
        tensors = {**self.state.for_plan(plan, self.backbone), "items": received.clone()}
        losses = train_clients(
            self.backbone,
            plan,
            tensors,
            self.optimizer,
            self.ctx.training["early_stop_threshold"],
            self.ctx.training["kernels"],
        )
        return tensors, received, losses

    def train_round(self, round_index: int, samples: RoundSamples, negatives: np.ndarray) -> torch.Tensor:
        out = torch.full((self.num_users,), float("nan"), dtype=torch.float64, device=self.device)
        if round_index == 0:  # warm-up: one FedAvg round over every user, then cluster
            plan = samples.plan()
            tensors, received, losses = self._train(plan)
            self.state.write_back(plan, self.backbone, {"user": tensors["user"]})
            fedavg_rows(self.item_table, plan, tensors["items"], received)
            self.labels = self._cluster(round_index)
            out[plan.clients.to(self.device)] = losses
            return out
        delegates = self._delegates(round_index)
        plan = samples.plan(delegates)
        ranked = plan.clients.to(self.device)
        before = self.user_emb.clone()
        tensors, received, losses = self._train(plan)
        self._aggregate_items(plan, tensors["items"], received)
        self.state.write_back(plan, self.backbone, {"user": tensors["user"]})
        self.labels = self._cluster(round_index)
        self._propagate(ranked, before, round_index)
        out[ranked] = losses
        return out

    def _aggregate_items(self, plan, trained: torch.Tensor, received: torch.Tensor) -> None:
        """Item j <- sum_k q_kj w_k[j] / sum_k q_kj, q_kj = |w_k[j] - w_0[j]|_1, over the delegates (a
        delegate that did not touch j has q_kj = 0); rows nobody changed stay."""
        pool_items = plan.pool_items.to(self.device)
        change = (trained - received).abs().sum(1)  # q per pool row
        num = torch.zeros_like(self.item_table).index_add_(0, pool_items, change.unsqueeze(1) * trained)
        den = torch.zeros(self.num_items, device=self.device, dtype=change.dtype).index_add_(0, pool_items, change)
        moved = den > 0
        self.item_table[moved] = num[moved] / den[moved].unsqueeze(1)

    def _propagate(self, delegates: torch.Tensor, before: torch.Tensor, round_index: int) -> None:
        """Every non-delegate s of a cluster with delegates D_c: p_s <- p_s + gamma_t mean_{k in D_c} dp_k."""
        gamma = self.ctx.hparams["gamma0"] * math.exp(-self.ctx.hparams["gamma_decay"] * round_index)
        k = self.labels.max().item() + 1
        delta = self.user_emb[delegates] - before[delegates]
        d_labels = self.labels[delegates]
        sums = torch.zeros((k, delta.shape[1]), device=self.device, dtype=delta.dtype).index_add_(0, d_labels, delta)
        counts = torch.bincount(d_labels, minlength=k)
        mean = sums / counts.clamp(min=1).unsqueeze(1).to(delta.dtype)
        is_delegate = torch.zeros(self.num_users, dtype=torch.bool, device=self.device)
        is_delegate[delegates] = True
        follow = ~is_delegate & (counts[self.labels] > 0)
        self.user_emb[follow] = before[follow] + gamma * mean[self.labels[follow]]

    def score(self, users, items):
        return fcf_scores(self.user_emb[users], self.item_table[items])

    def score_all(self, users):
        return torch.sigmoid(self.user_emb[users] @ self.item_table.T)
