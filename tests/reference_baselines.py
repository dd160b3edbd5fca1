"""Plain, slow, per-client references of the Table-1 baselines, written the way their released codes
run: one torch module and fresh torch.optim optimizers per client per round, nn.BCELoss, Python loops
over clients and mini-batches. They share only the initial state, the negatives and the batch order
with the engine (`RoundPlan.client_batches`)."""

from __future__ import annotations

import functools

import torch

from fedem.methods.privacy_sum import laplace_sum
from fedem.rng import numpy_rng
from fedem.training.backbones import init_fcf, init_linear_stack
from fedem.training.schedule import build_plan

BCE = torch.nn.BCELoss()


def epoch_loop(batches, per_epoch: int, threshold: float, step) -> tuple[float, int]:
    """The released codes' local loop: epochs of mini-batches, the running loss (sample-weighted over
    every batch so far) and the FedEM/FedCA early stop on its relative change. step(items, labels) -> loss.
    Returns (running loss, epochs run)."""
    loss_sum, n_sum, history = 0.0, 0, []
    for epoch in range(len(batches) // per_epoch):
        for items, labels in batches[epoch * per_epoch : (epoch + 1) * per_epoch]:
            loss_sum += step(items, labels) * len(items)
            n_sum += len(items)
        history.append(loss_sum / n_sum)
        if epoch > 0 and abs(history[epoch] - history[epoch - 1]) / abs(history[epoch - 1] + 1e-5) < threshold:
            break
    return loss_sum / n_sum, len(history)


def linear_stack(params: list[torch.Tensor], last=None) -> torch.nn.Sequential:
    layers = []
    n = len(params) // 2
    for i in range(n):
        w, b = params[2 * i], params[2 * i + 1]
        lin = torch.nn.Linear(w.shape[1], w.shape[0])
        lin.weight.data.copy_(w)
        lin.bias.data.copy_(b)
        layers.append(lin)
        if i < n - 1:
            layers.append(torch.nn.ReLU())
    if last is not None:
        layers.append(last)
    return torch.nn.Sequential(*layers)


def plan_of(ds, rc, samples):
    tr = rc["training"]
    return build_plan(samples, torch.arange(ds.num_users), tr["batch_size"], tr["local_epochs"], "cpu")


class RefPFedRec:
    """engine.py::fed_train_a_round / fed_train_single_batch of the released PFedRec."""

    def __init__(self, ds, rc, seed):
        self.ds, self.rc = ds, rc
        d = rc["training"]["latent_dim"]
        self.server = init_fcf(ds.num_items, d, seed)[0].clone()
        w, b = init_linear_stack([d, 1], seed, "init-score-head")
        self.heads = {u: linear_stack([w, b]) for u in range(ds.num_users)}
        self.tuned: dict[int, torch.Tensor] = {}
        self.rc_seed = seed

    def train_round(self, t, samples):
        plan = plan_of(self.ds, self.rc, samples)
        opt_cfg = self.rc["method"]["optimizer"]
        lr_items = opt_cfg["lr"]["items"] * self.ds.num_items * self.rc["method"]["lr_eta"]
        losses = {}
        for rank, user in enumerate(plan.clients.tolist()):
            emb = torch.nn.Embedding.from_pretrained(self.server.clone(), freeze=False)
            head = self.heads[user]
            opt = torch.optim.SGD(head.parameters(), lr=opt_cfg["lr"]["head"])
            opt_i = torch.optim.SGD(emb.parameters(), lr=lr_items)

            step = functools.partial(self._step, head, emb, opt, opt_i)
            losses[user], _ = epoch_loop(plan.client_batches(rank), int(plan.batches_per_epoch[rank]), 1.0, step)
            self.tuned[user] = emb.weight.data.clone()
        uploads = torch.stack([self.tuned[u] for u in range(self.ds.num_users)])
        noise = self.rc["method"].get("upload_noise", 0.0)
        server = uploads.mean(0)
        if noise > 0:  # noisy whole uploads: their mean is the tuned tables' mean plus the noise sum / n
            rng = numpy_rng(self.rc_seed, "upload-noise", t)  # the engine's draw (tests/test_privacy.py checks it)
            server = (
                server + (laplace_sum(tuple(server.shape), noise, self.ds.num_users, rng) / self.ds.num_users).float()
            )
        self.server = server
        return losses

    @staticmethod
    def _step(head, emb, opt, opt_i, items, labels):
        """fed_train_single_batch: a step of the score head, then a fresh forward and a step of the table."""
        opt.zero_grad()
        BCE(torch.sigmoid(head(emb(items)).view(-1)), labels).backward()
        opt.step()
        opt_i.zero_grad()
        loss = BCE(torch.sigmoid(head(emb(items)).view(-1)), labels)
        loss.backward()
        opt_i.step()
        return loss.item()

    def check_state(self, engine, close):
        close(engine.item_table, self.server)
        for u in range(self.ds.num_users):
            weight, bias = self.heads[u].parameters()
            close(engine.state["head.weight"][u], weight.data[0])
            close(engine.state["head.bias"][u], bias.data)

    @torch.no_grad()
    def scores(self, candidates):
        return torch.stack(
            [torch.sigmoid(self.heads[u](self.tuned[u][candidates[u]]).view(-1)) for u in range(self.ds.num_users)]
        )


class RefFedNCF:
    """FedCA's FedNCF model (model/model.py) with a FedAvg server: Adam on (user, items) and on the tower
    with weight decay, the FedEM/FedCA early stop, sample-weighted means of the table and the tower."""

    def __init__(self, ds, rc, seed):
        self.ds, self.rc = ds, rc
        d = rc["training"]["latent_dim"]
        items, user = init_fcf(ds.num_items, d, seed)
        self.server = items.clone()
        self.tower = [t.clone() for t in init_linear_stack(rc["method"]["mlp_layers"], seed, "init-mlp")]
        self.users = {u: user.clone() for u in range(ds.num_users)}
        self.epochs: dict[int, int] = {}  # epochs each client ran in the last round

    def _model(self, table, tower):
        emb = torch.nn.Embedding.from_pretrained(table.clone(), freeze=False)
        return emb, linear_stack([t.clone() for t in tower])

    def _forward(self, user, emb, mlp, items):
        q = emb(items)
        return torch.sigmoid(mlp(torch.cat((user.expand(len(items), -1), q), dim=1)).view(-1))

    def train_round(self, t, samples):
        plan = plan_of(self.ds, self.rc, samples)
        tr, opt_cfg = self.rc["training"], self.rc["method"]["optimizer"]
        losses, tables, towers = {}, {}, {}
        for rank, u in enumerate(plan.clients.tolist()):
            user = torch.nn.Parameter(self.users[u].clone())
            emb, mlp = self._model(self.server, self.tower)
            opt = torch.optim.Adam(
                [
                    {"params": [user, emb.weight], "lr": opt_cfg["lr"]["embedding"]},
                    {
                        "params": list(mlp.parameters()),
                        "lr": opt_cfg["lr"]["mlp"],
                        "weight_decay": opt_cfg["weight_decay"]["mlp"],
                    },
                ]
            )

            step = functools.partial(self._step, opt, user, emb, mlp)
            losses[u], self.epochs[u] = epoch_loop(
                plan.client_batches(rank), int(plan.batches_per_epoch[rank]), tr["early_stop_threshold"], step
            )
            self.users[u] = user.data.clone()
            tables[u] = emb.weight.data.clone()
            towers[u] = [p.data.clone() for p in mlp.parameters()]
        counts = plan.sample_counts[torch.argsort(plan.clients)].double()
        w = counts / counts.sum()
        n = self.ds.num_users
        self.server = sum(w[u] * tables[u].double() for u in range(n)).float()
        self.tower = [sum(w[u] * towers[u][i].double() for u in range(n)).float() for i in range(len(self.tower))]
        return losses

    def _step(self, opt, user, emb, mlp, items, labels):
        opt.zero_grad()
        loss = BCE(self._forward(user, emb, mlp, items), labels)
        loss.backward()
        opt.step()
        return loss.item()

    def check_state(self, engine, close):
        close(engine.item_table, self.server)
        for mine, theirs in zip(engine.mlp.values(), self.tower):
            close(mine, theirs)
        for u in range(self.ds.num_users):
            close(engine.user_emb[u], self.users[u])

    @torch.no_grad()
    def scores(self, candidates):
        emb, mlp = self._model(self.server, self.tower)
        return torch.stack([self._forward(self.users[u], emb, mlp, candidates[u]) for u in range(self.ds.num_users)])


class RefFedRAP:
    """model/engine.py::federatedTrainOneRound of the released FedRAP: dense tables, one SGD with three
    groups and weight decay on all, ExponentialLR(0.95) stepped after every batch, the round's lrs x0.97,
    model/loss.py's BCE - lambda MSE(D, C) + mu L1(C), and its early stop (no epsilon)."""

    def __init__(self, ds, rc, seed):
        from fedem.rng import torch_gen

        self.ds, self.rc = ds, rc
        d = rc["training"]["latent_dim"]
        personal = init_fcf(ds.num_items, d, seed)[0]
        self.server = torch.randn((ds.num_items, d), generator=torch_gen(seed, "init-common-table"))
        w, b = init_linear_stack([d, 1], seed, "init-score-head")
        self.heads = {u: linear_stack([w, b]) for u in range(ds.num_users)}
        self.personal = {u: personal.clone() for u in range(ds.num_users)}
        self.epochs: dict[int, int] = {}

    # plug-in hooks (tests/reference_plugin.py): where a client's C starts, the C rows its model reads,
    # a step before each of its own, what it keeps of C
    def _start_common(self, u):
        return self.server

    def _common_rows(self, u, emb_c, items):
        return emb_c(items)

    def _before_step(self, u, loss_fn):
        pass

    def _keep_common(self, u, table):
        pass

    def _loss(self, head, emb_d, emb_c, items, labels, u=None):
        hp = self.rc["method"]
        d_rows, c_rows = emb_d(items), self._common_rows(u, emb_c, items)
        pred = torch.sigmoid(head(d_rows + c_rows).view(-1))
        reg = torch.nn.L1Loss()(c_rows, torch.zeros_like(c_rows))
        return BCE(pred, labels) - hp["lambda"] * torch.nn.MSELoss()(d_rows, c_rows) + hp["mu"] * reg

    def train_round(self, t, samples):
        plan = plan_of(self.ds, self.rc, samples)
        hp, opt_cfg = self.rc["method"], self.rc["method"]["optimizer"]
        decay = hp["round_decay"] ** t
        losses, uploads = {}, {}
        for rank, u in enumerate(plan.clients.tolist()):
            emb_d = torch.nn.Embedding.from_pretrained(self.personal[u].clone(), freeze=False)
            emb_c = torch.nn.Embedding.from_pretrained(self._start_common(u).clone(), freeze=False)
            head = self.heads[u]
            opt = torch.optim.SGD(
                [
                    {"params": head.parameters(), "lr": opt_cfg["lr"]["head"] * decay},
                    {"params": emb_d.parameters(), "lr": opt_cfg["lr"]["tables"] * decay},
                    {"params": emb_c.parameters(), "lr": opt_cfg["lr"]["tables"] * decay},
                ],
                weight_decay=opt_cfg["weight_decay"]["tables"],
            )
            sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=opt_cfg["step_decay"])
            batches, per_epoch = plan.client_batches(rank), int(plan.batches_per_epoch[rank])
            loss_sum, n_sum, history = 0.0, 0, []
            for epoch in range(len(batches) // per_epoch):
                for items, labels in batches[epoch * per_epoch : (epoch + 1) * per_epoch]:
                    self._before_step(u, functools.partial(self._loss, head, emb_d, emb_c, items, labels, u))
                    opt.zero_grad()
                    loss = self._loss(head, emb_d, emb_c, items, labels, u)
                    loss.backward()
                    opt.step()
                    sched.step()
                    loss_sum += loss.item() * len(items)
                    n_sum += len(items)
                history.append(loss_sum / n_sum)
                tol = self.rc["training"]["early_stop_threshold"]
                if epoch > 0 and abs(history[epoch] - history[epoch - 1]) / abs(history[epoch - 1]) < tol:
                    break
            losses[u], self.epochs[u] = loss_sum / n_sum, len(history)
            self.personal[u] = emb_d.weight.data.clone()
            uploads[u] = emb_c.weight.data.clone()
            self._keep_common(u, uploads[u])
        self.server = torch.stack([uploads[u] for u in range(self.ds.num_users)]).mean(0)
        return losses

    def check_state(self, engine, close):
        close(engine.common, self.server)
        for u in range(self.ds.num_users):
            close(engine.state["personal"][u], self.personal[u])
            weight, bias = self.heads[u].parameters()
            close(engine.state["head.weight"][u], weight.data[0])
            close(engine.state["head.bias"][u], bias.data)

    @torch.no_grad()
    def scores(self, candidates):
        out = []
        for u in range(self.ds.num_users):
            rows = self.personal[u][candidates[u]] + self.server[candidates[u]]
            out.append(torch.sigmoid(self.heads[u](rows).view(-1)))
        return torch.stack(out)


class RefGPFedRec:
    """engine.py::fed_train_a_round / fed_train_single_batch / aggregate_clients_params and utils.py's
    graph functions of the released GPFedRec (sklearn's pairwise cosine distances, the threshold rule)."""

    def __init__(self, ds, rc, seed):
        self.ds, self.rc = ds, rc
        hp, d = rc["method"], rc["training"]["latent_dim"]
        items, user = init_fcf(ds.num_items, d, seed)
        tower = init_linear_stack(hp["mlp_layers"], seed, "init-mlp")
        self.users = {u: user.clone() for u in range(ds.num_users)}
        self.towers = {u: linear_stack(tower) for u in range(ds.num_users)}
        self.tables = {u: items.clone() for u in range(ds.num_users)}
        self.targets = {u: items.clone() for u in range(ds.num_users)}
        self.global_table = items.clone()

    def _forward(self, user, emb, mlp, items, u=None):
        rows = self._item_rows(u, emb, items)
        return torch.sigmoid(mlp(torch.cat((user.expand(len(items), -1), rows), dim=1)).view(-1))

    # plug-in hooks (tests/reference_plugin.py): where a client's table starts, the rows its model reads,
    # a step before each of its own
    def _start_table(self, u):
        return self.global_table

    def _item_rows(self, u, emb, items):
        return emb(items)

    def _before_step(self, u, loss_fn):
        pass

    def train_round(self, t, samples):
        plan = plan_of(self.ds, self.rc, samples)
        hp = self.rc["method"]
        lr = hp["optimizer"]["lr"]
        losses = {}
        for rank, u in enumerate(plan.clients.tolist()):
            user = torch.nn.Parameter(self.users[u].clone())
            emb = torch.nn.Embedding.from_pretrained(self._start_table(u).clone(), freeze=False)
            mlp = self.towers[u]
            opts = [
                torch.optim.SGD(mlp.parameters(), lr=lr["mlp"]),
                torch.optim.SGD([user], lr=lr["user"] * hp["lr_eta"] - lr["user"]),
                torch.optim.SGD(emb.parameters(), lr=lr["items"] * self.ds.num_items * hp["lr_eta"] - lr["items"]),
            ]
            step = functools.partial(self._step, opts, user, emb, mlp, self.targets[u], hp["reg"], u)
            losses[u], _ = epoch_loop(plan.client_batches(rank), int(plan.batches_per_epoch[rank]), 1.0, step)
            self.users[u] = user.data.clone()
            self.tables[u] = emb.weight.data.clone()
        self._aggregate()
        return losses

    def _step(self, opts, user, emb, mlp, target, reg, u, items, labels):
        self._before_step(u, lambda: BCE(self._forward(user, emb, mlp, items, u), labels))
        for opt in opts:
            opt.zero_grad()
        loss = BCE(self._forward(user, emb, mlp, items, u), labels)
        loss = loss + reg * torch.nn.MSELoss()(emb.weight, target)
        loss.backward()
        for opt in opts:
            opt.step()
        return loss.item()

    def _aggregate(self):
        import numpy as np
        from sklearn.metrics import pairwise_distances

        hp, n = self.rc["method"], self.ds.num_users
        flat = np.stack([self.tables[u].numpy().reshape(-1) for u in range(n)]).astype("float32")
        relation = pairwise_distances(flat, metric="cosine")
        if hp["graph"] == "similarity":
            relation = 1 - relation
        graph = np.zeros(relation.shape, dtype="float32")
        threshold = np.mean(relation) * hp["neighborhood_threshold"]
        for i in range(n):
            high = np.sum(relation[i] > threshold)
            if high > 0:
                graph[i][relation[i] > threshold] = 1 / high
            else:
                graph[i][i] = 1
        aggregated = flat
        for _ in range(hp["mp_layers"]):
            aggregated = graph @ aggregated
        self.targets = {u: torch.from_numpy(aggregated[u].reshape(self.tables[u].shape)).clone() for u in range(n)}
        self.global_table = sum(self.targets.values()) / n

    def check_state(self, engine, close):
        close(engine.global_table, self.global_table)
        for u in range(self.ds.num_users):
            close(engine.targets[u], self.targets[u])
            close(engine.tables[u], self.tables[u])
            close(engine.state["user"][u], self.users[u])

    @torch.no_grad()
    def scores(self, candidates):
        out = []
        for u in range(self.ds.num_users):
            emb = torch.nn.Embedding.from_pretrained(self.tables[u])
            out.append(self._forward(self.users[u], emb, self.towers[u], candidates[u]))
        return torch.stack(out)


class RefCoLR:
    """fedrec/fedmf_colr.py's model (Q = W + A B, W and B frozen, A from zero each round) with the
    package's client protocol (a fresh Adam on p_u and A, the running-loss early stop) and the released
    server: the item-wise mean of A over the clients that touched each item, folded into W."""

    def __init__(self, ds, rc, seed):
        from fedem.rng import torch_gen

        self.ds, self.rc, self.seed = ds, rc, seed
        d, std = rc["training"]["latent_dim"], rc["method"]["init_std"]
        self.server = torch.randn((ds.num_items, d), generator=torch_gen(seed, "init-item-table")) * std
        user = torch.randn((d,), generator=torch_gen(seed, "init-user-embedding")) * std
        self.users = {u: user.clone() for u in range(ds.num_users)}
        self.epochs: dict[int, int] = {}

    def train_round(self, t, samples):
        from fedem.methods.colr import correlated_basis

        plan = plan_of(self.ds, self.rc, samples)
        hp, tr = self.rc["method"], self.rc["training"]
        basis = correlated_basis(hp["rank"], self.server.shape[1], self.seed, t)
        total = torch.zeros(self.ds.num_items, hp["rank"])
        touched = torch.zeros(self.ds.num_items)
        losses = {}
        for rank, u in enumerate(plan.clients.tolist()):
            user = torch.nn.Parameter(self.users[u].clone())
            update = torch.nn.Parameter(torch.zeros(self.ds.num_items, hp["rank"]))
            opt = torch.optim.Adam([user, update], lr=hp["optimizer"]["lr"]["embedding"])
            step = functools.partial(self._step, opt, user, update, basis)
            batches = plan.client_batches(rank)
            losses[u], self.epochs[u] = epoch_loop(
                batches, int(plan.batches_per_epoch[rank]), tr["early_stop_threshold"], step
            )
            self.users[u] = user.data.clone()
            seen = torch.unique(torch.cat([items for items, _ in batches]))
            total += update.data
            touched[seen] += 1
        self.server = self.server + (total / touched.clamp(min=1).unsqueeze(1)) @ basis
        return losses

    def _step(self, opt, user, update, basis, items, labels):
        opt.zero_grad()
        rows = self.server[items] + update[items] @ basis
        loss = BCE(torch.sigmoid(rows @ user), labels)
        loss.backward()
        opt.step()
        return loss.item()

    def check_state(self, engine, close):
        close(engine.item_table, self.server)
        for u in range(self.ds.num_users):
            close(engine.user_emb[u], self.users[u])

    @torch.no_grad()
    def scores(self, candidates):
        return torch.stack(
            [torch.sigmoid(self.server[candidates[u]] @ self.users[u]) for u in range(self.ds.num_users)]
        )


class RefFedCIA:
    """flalgorithm/fedcia_param.py's round on one-user clients: each client's FCF training (the
    package's local step, tests/reference.py), the upload Q_u Q_u^T + Laplace noise (the same draw as the
    engine's: its sum over clients), the unweighted mean S, then per client 100 steps of torch.optim.SGD
    with weight decay on Q_u alone of the unsquared Frobenius loss torch.norm(Q_u Q_u^T - S)."""

    def __init__(self, ds, rc, seed):
        from reference import RefFCF

        self.ds, self.rc, self.seed = ds, rc, seed
        items, user = init_fcf(ds.num_items, rc["training"]["latent_dim"], seed)
        self.models = [RefFCF(items, user, None) for _ in range(ds.num_users)]

    def train_round(self, t, samples):

        from fedem.rng import numpy_rng

        from reference import train_client

        plan = plan_of(self.ds, self.rc, samples)
        hp, tr = self.rc["method"], self.rc["training"]
        losses = {}
        for rank, u in enumerate(plan.clients.tolist()):
            losses[u] = train_client(
                self.models[u],
                plan.client_batches(rank),
                hp["optimizer"]["lr"]["embedding"],
                None,
                int(plan.batches_per_epoch[rank]),
                tr["early_stop_threshold"],
            )
        n, m = self.ds.num_users, self.ds.num_items
        tables = [model.item_embeddings.weight.data for model in self.models]
        total = sum(q.double() @ q.double().T for q in tables)
        rng = numpy_rng(self.seed, "fedcia-upload-noise", t)
        b = hp["noise_scale"]
        total = total + torch.from_numpy(b * (rng.gamma(n, 1.0, size=(m, m)) - rng.gamma(n, 1.0, size=(m, m))))
        target = (total / n).float()
        for model in self.models:
            q = model.item_embeddings.weight
            opt = torch.optim.SGD([q], lr=hp["align_lr"], weight_decay=hp["align_wd"])
            for _ in range(hp["align_steps"]):
                opt.zero_grad()
                torch.norm(q @ q.T - target).backward()
                opt.step()
        return losses

    def check_state(self, engine, close):
        for u, model in enumerate(self.models):
            close(engine.tables[u], model.item_embeddings.weight.data)
            close(engine.user_emb[u], model.user_embedding.data)

    @torch.no_grad()
    def scores(self, candidates):
        return torch.stack([model(candidates[u]) for u, model in enumerate(self.models)])


class RefFedFast:
    """FedFast's round as the paper and the spec's bug-fixed ActvAGG describe it, with plain loops over
    delegates and items: the FCF reference client (tests/reference.py) per delegate, the L1-change-weighted
    item rows, the delegates' user rows written back, the mean delegate change of each cluster added to its
    other users with gamma_t. It shares the engine's k-means and ActvSAMP draws (tested on their own)."""

    def __init__(self, ds, rc, seed):
        self.ds, self.rc, self.seed = ds, rc, seed
        items, user = init_fcf(ds.num_items, rc["training"]["latent_dim"], seed)
        self.server = items.clone()
        self.users = user.expand(ds.num_users, -1).clone()

    def _train(self, client_ids, samples):
        from reference import RefFCF, train_client

        tr, lr = self.rc["training"], self.rc["method"]["optimizer"]["lr"]["embedding"]
        plan = build_plan(samples, torch.tensor(client_ids), tr["batch_size"], tr["local_epochs"], "cpu")
        out = {}
        for rank, u in enumerate(plan.clients.tolist()):
            model = RefFCF(self.server, self.users[u], None)
            loss = train_client(
                model,
                plan.client_batches(rank),
                lr,
                None,
                int(plan.batches_per_epoch[rank]),
                tr["early_stop_threshold"],
            )
            out[u] = (
                loss,
                model.user_embedding.data.clone(),
                model.item_embeddings.weight.data.clone(),
                plan.sample_counts[rank],
            )
        return out

    def train_round(self, t, samples):
        import math

        from fedem.methods.fedfast import active_sample, kmeans
        from fedem.rng import numpy_rng, torch_gen

        hp, n = self.rc["method"], self.ds.num_users

        def cluster(r):
            return kmeans(
                self.users, hp["clusters"], torch_gen(self.seed, "fedfast-kmeans", r), hp["kmeans_iterations"]
            )

        if t == 0:
            trained = self._train(list(range(n)), samples)
            total = sum(float(c) for *_, c in trained.values())
            self.server = sum(float(c) / total * q.double() for _, _, q, c in trained.values()).float()
            for u, (_, p, _, _) in trained.items():
                self.users[u] = p
            self.labels = cluster(0)
            return {u: v[0] for u, v in trained.items()}
        delegates = active_sample(
            self.labels.numpy(), hp["clusters"], hp["delegate_ratio"], numpy_rng(self.seed, "fedfast-sample", t)
        ).tolist()
        trained = self._train(delegates, samples)
        new_table = self.server.clone()
        for j in range(self.ds.num_items):
            weights = {k: float((q[j] - self.server[j]).abs().sum()) for k, (_, _, q, _) in trained.items()}
            if sum(weights.values()) > 0:
                new_table[j] = sum(w * trained[k][2][j] for k, w in weights.items()) / sum(weights.values())
        before = self.users.clone()
        for k, (_, p, _, _) in trained.items():
            self.users[k] = p
        self.server = new_table
        self.labels = cluster(t)
        gamma = hp["gamma0"] * math.exp(-hp["gamma_decay"] * t)
        for c in set(self.labels.tolist()):
            in_c = [k for k in delegates if int(self.labels[k]) == c]
            if not in_c:
                continue
            mean = sum(self.users[k] - before[k] for k in in_c) / len(in_c)
            for s in range(n):
                if int(self.labels[s]) == c and s not in delegates:
                    self.users[s] = before[s] + gamma * mean
        return {u: v[0] for u, v in trained.items()}

    def check_state(self, engine, close):
        close(engine.item_table, self.server)
        close(engine.user_emb, self.users)

    @torch.no_grad()
    def scores(self, candidates):
        return torch.stack(
            [torch.sigmoid(self.server[candidates[u]] @ self.users[u]) for u in range(self.ds.num_users)]
        )
