"""A plain, slow, per-client reference of fedmf / local / fedem, written the way the authors' code
runs (one torch module and one torch.optim.Adam per client per round, nn.BCELoss, a cvxpy QP per
aggregation row). It shares only the initial state, the negatives, the batch order and the
aggregation set with the engine, which is what makes it an independent check of the fast path."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import torch

from fedem.methods.privacy import laplace_noise
from fedem.rng import numpy_rng, torch_gen
from fedem.training.schedule import build_plan


class RefFCF(torch.nn.Module):
    """merge: FedEM's rule (elastic: the adapter MLP; dynamic: one learned logit; static: a constant)."""

    def __init__(self, items, user, adapter: list[torch.Tensor] | None, merge="elastic", static_rho=None):
        super().__init__()
        self.merge_kind, self.static_rho = merge, static_rho
        self.merge_logit = torch.nn.Parameter(torch.zeros(1)) if merge == "dynamic" else None
        self.item_embeddings = torch.nn.Embedding.from_pretrained(items.clone(), freeze=False)
        self.user_embedding = torch.nn.Parameter(user.clone())
        self.adapter = None
        if adapter is not None:
            layers = []
            n = len(adapter) // 2
            for i in range(n):
                w, b = adapter[2 * i], adapter[2 * i + 1]
                lin = torch.nn.Linear(w.shape[1], w.shape[0])
                lin.weight.data.copy_(w)
                lin.bias.data.copy_(b)
                layers += [lin, torch.nn.ReLU() if i < n - 1 else torch.nn.Sigmoid()]
            self.adapter = torch.nn.Sequential(*layers)

    def merge_params(self) -> list[torch.nn.Parameter]:
        if self.merge_kind == "dynamic":
            return [self.merge_logit]
        return list(self.adapter.parameters()) if self.adapter is not None else []

    def merge(self, local, global_):
        delta = global_ - local
        if self.merge_kind == "elastic":
            rho = self.adapter(torch.cat((local, delta), dim=-1))
        elif self.merge_kind == "dynamic":
            rho = torch.sigmoid(self.merge_logit)
        else:
            rho = self.static_rho
        return local + rho * delta

    def forward(self, items, global_table=None):
        rows = self.item_embeddings(items)
        if global_table is not None:
            rows = self.merge(rows, global_table[items])
        return torch.sigmoid((self.user_embedding * rows).sum(-1))


def train_client(model, batches, lr, lr_adapter, epochs_batches, threshold, global_table=None):
    """The authors' federatedTrainOneRound inner loop for one client."""
    opt = torch.optim.Adam([model.user_embedding, model.item_embeddings.weight], lr=lr)
    merge_params = model.merge_params() if global_table is not None else []
    opt_ad = torch.optim.Adam(merge_params, lr=lr_adapter) if merge_params else None
    crit = torch.nn.BCELoss()
    loss_sum, n_sum, history = 0.0, 0, []
    per_epoch = epochs_batches
    for epoch in range(len(batches) // per_epoch):
        for items, labels in batches[epoch * per_epoch : (epoch + 1) * per_epoch]:
            if opt_ad is not None:
                opt_ad.zero_grad()
                crit(model(items, global_table), labels).backward()
                opt_ad.step()
            opt.zero_grad()
            loss = crit(model(items, global_table), labels)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(items)
            n_sum += len(items)
        history.append(loss_sum / n_sum)
        if epoch > 0 and abs(history[epoch] - history[epoch - 1]) / abs(history[epoch - 1] + 1e-5) < threshold:
            break
    return loss_sum / n_sum


def pca_sign_fixed(table: torch.Tensor) -> torch.Tensor:
    x = table.double() - table.double().mean(0, keepdim=True)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    v = vh[0]
    v = v * torch.sign(v[v.abs().argmax()])
    return (x @ v).float()


def qp_row(p: np.ndarray, sim_row: np.ndarray, alpha: float) -> np.ndarray:
    """The authors' QP: min x'x + (2 alpha (-s) - 2 p)'x, x >= 0, sum x = 1."""
    n = len(p)
    x = cp.Variable(n)
    obj = cp.Minimize(cp.sum_squares(x) + (alpha * 2 * (-sim_row) - 2 * p) @ x)
    cp.Problem(obj, [x >= 0, cp.sum(x) == 1]).solve(solver=cp.CLARABEL)
    return np.asarray(x.value)


class Reference:
    def __init__(self, method, dataset, run_config, seed, init_items, init_user, init_adapter=None):
        self.method, self.ds, self.cfg, self.seed = method, dataset, run_config, seed
        U = dataset.num_users
        hp = run_config["method"]
        self.merge_kind = hp.get("merge", "elastic")
        self.models = [
            RefFCF(init_items, init_user, init_adapter, self.merge_kind, hp.get("static_rho")) for _ in range(U)
        ]
        self.global_items = init_items.clone()
        self.g_store: dict[int, torch.Tensor] = {}

    def train_round(self, t, samples):
        tr, hp = self.cfg["training"], self.cfg["method"]
        plan = build_plan(samples, torch.arange(self.ds.num_users), tr["batch_size"], tr["local_epochs"], "cpu")
        assert plan.num_clients == self.ds.num_users
        losses = {}
        for rank, client in enumerate(plan.clients.tolist()):
            model = self.models[client]
            batches = plan.client_batches(rank)
            bpe = int(plan.batches_per_epoch[rank])
            if self.method == "fedmf":
                model.item_embeddings.weight.data.copy_(self.global_items)
            g = self.g_store.get(client) if self.method == "fedem" else None
            if g is not None and self.merge_kind == "replace":  # the client takes G_u and trains unmerged
                model.item_embeddings.weight.data.copy_(g)
                g = None
            if g is not None:
                with torch.no_grad():
                    model.item_embeddings.weight.data = model.merge(model.item_embeddings.weight.data, g)
            losses[client] = train_client(
                model,
                batches,
                hp["optimizer"]["lr"]["embedding"],
                hp["optimizer"]["lr"].get("adapter"),
                bpe,
                tr["early_stop_threshold"],
                g,
            )
        counts = plan.sample_counts[torch.argsort(plan.clients)].double()
        if self.method == "fedmf":
            w = counts / counts.sum()
            self.global_items = sum(
                w[u] * self.models[u].item_embeddings.weight.data.double() for u in range(self.ds.num_users)
            ).float()
        if self.method == "fedem":
            n_agg = int(self.ds.num_users * hp["agg_clients_ratio"])
            chosen = np.sort(numpy_rng(self.seed, "aggregation-set", t).choice(self.ds.num_users, n_agg, replace=False))
            tables = [self.models[u].item_embeddings.weight.data.clone() for u in chosen]
            if hp.get("upload_noise", 0) > 0:  # the server sees noisy uploads (the same draws as the engine)
                noise = laplace_noise(
                    (n_agg, *tables[0].shape), hp["upload_noise"], torch_gen(self.seed, "upload-noise", t)
                )
                tables = [tab + noise[j] for j, tab in enumerate(tables)]
            c = [pca_sign_fixed(tab) for tab in tables]
            sim = np.array([[1 / (1 + float(torch.norm(ci - cj))) for cj in c] for ci in c])
            sim[sim > hp["sim_clip"]] = 1
            p = counts[chosen].numpy() / counts[chosen].numpy().sum()
            W = np.stack([qp_row(p, sim[i], hp["alpha"]) for i in range(n_agg)])
            W[np.abs(W) < 1e-20] = 0
            W = W / W.sum(1, keepdims=True)
            self.g_store = {int(u): sum(float(W[i, j]) * tables[j] for j in range(n_agg)) for i, u in enumerate(chosen)}
        return losses

    @torch.no_grad()
    def scores(self, candidates: torch.Tensor) -> torch.Tensor:
        out = []
        for u, model in enumerate(self.models):
            items = candidates[u]
            if self.method == "fedmf":
                rows = self.global_items[items]
            else:
                rows = model.item_embeddings.weight.data[items]
                if u in self.g_store:
                    g_rows = self.g_store[u][items]
                    rows = g_rows if self.merge_kind == "replace" else model.merge(rows, g_rows)
            out.append(torch.sigmoid((model.user_embedding * rows).sum(-1)))
        return torch.stack(out)
