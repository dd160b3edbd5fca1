"""A plain, slow, per-client reference of FedEM's merging plugged into FedMF, PFedRec, GPFedRec and
FedRAP (Table 3),
written the way the FedEM authors' code merges (model/engine.py: an in-place merge at the start of the
round, the merge again in every forward, an adapter step before each of the host's steps), with the
hosts' own per-client steps (tests/reference_baselines.py). One nn.Module and fresh torch.optim
optimizers per client per round; shares only the initial state, negatives and batch order."""

from __future__ import annotations

import torch

from fedem.methods.adapter import init_adapter
from fedem.training.backbones import init_fcf, init_linear_stack

from reference_baselines import BCE, RefFedRAP, RefGPFedRec, epoch_loop, linear_stack, plan_of


class _Adapters:
    """Every client's adapter (nn.Sequential, sigmoid last), the merge, and the adapter's own SGD step
    before each of the host's steps (the SGD hosts' kind; no schedule, no weight decay)."""

    def _init_adapters(self, rc, seed):
        hp = rc["method"]
        adapter = init_adapter(hp["adapter_layers"], seed)
        self.adapters = {u: linear_stack(adapter, last=torch.nn.Sigmoid()) for u in range(self.ds.num_users)}
        self.trained = False
        self.merging = False

    def merged(self, u, local, global_):
        delta = global_ - local
        return local + self.adapters[u](torch.cat((local, delta), dim=-1)) * delta

    def _before_step(self, u, loss_fn):
        if not self.merging:
            return
        opt = torch.optim.SGD(self.adapters[u].parameters(), lr=self.rc["method"]["adapter_lr"])
        opt.zero_grad()
        loss_fn().backward()
        opt.step()

    def train_round(self, t, samples):
        """The host's round; from round 1 on, merged (round 0: no table of its own yet)."""
        self.merging = self.trained
        losses = super().train_round(t, samples)
        self.trained = True
        return losses

    def check_state(self, engine, close):
        super().check_state(engine.host, close)
        close(engine.local, torch.stack([self._own_table(u) for u in range(self.ds.num_users)]))


class RefPluggedGPFedRec(_Adapters, RefGPFedRec):
    """GPFedRec + EM: a client starts from merge(its own table, the server's mean), its model reads the
    merged rows, the pull toward r_u stays on its own table; evaluated with merge(own, new mean)."""

    def __init__(self, ds, rc, seed):
        RefGPFedRec.__init__(self, ds, rc, seed)
        self._init_adapters(rc, seed)

    def _start_table(self, u):
        if not self.trained:
            return self.global_table
        with torch.no_grad():
            return self.merged(u, self.tables[u], self.global_table)

    def _item_rows(self, u, emb, items):
        rows = emb(items)
        return self.merged(u, rows, self.global_table[items]) if self.merging else rows

    def _own_table(self, u):
        return self.tables[u]

    @torch.no_grad()
    def scores(self, candidates):
        out = []
        for u in range(self.ds.num_users):
            c = candidates[u]
            rows = self.merged(u, self.tables[u][c], self.global_table[c])
            x = torch.cat((self.users[u].expand(len(c), -1), rows), dim=1)
            out.append(torch.sigmoid(self.towers[u](x).view(-1)))
        return torch.stack(out)


class RefPluggedFedRAP(_Adapters, RefFedRAP):
    """FedRAP + EM: each client keeps its own copy of C and starts from merge(own C, the server's C); its
    model (score and both regularisers) reads the merged rows of C; the server's C is the mean of the
    clients' copies; evaluated with D_u + merge(own C, new C)."""

    def __init__(self, ds, rc, seed):
        RefFedRAP.__init__(self, ds, rc, seed)
        self._init_adapters(rc, seed)
        self.own_common = {u: self.server.clone() for u in range(ds.num_users)}

    def _start_common(self, u):
        if not self.trained:
            return self.own_common[u]
        with torch.no_grad():
            return self.merged(u, self.own_common[u], self.server)

    def _common_rows(self, u, emb_c, items):
        rows = emb_c(items)
        return self.merged(u, rows, self.server[items]) if self.merging else rows

    def _keep_common(self, u, table):
        self.own_common[u] = table

    def _own_table(self, u):
        return self.own_common[u]

    @torch.no_grad()
    def scores(self, candidates):
        out = []
        for u in range(self.ds.num_users):
            c = candidates[u]
            rows = self.personal[u][c] + self.merged(u, self.own_common[u][c], self.server[c])
            out.append(torch.sigmoid(self.heads[u](rows).view(-1)))
        return torch.stack(out)


class RefPlugged:
    def __init__(self, ds, rc, seed):
        self.ds, self.rc = ds, rc
        hp = rc["method"]
        self.host = hp["host"]
        d = rc["training"]["latent_dim"]
        items, user = init_fcf(ds.num_items, d, seed)
        self.server = items.clone()
        self.local = {u: items.clone() for u in range(ds.num_users)}
        adapter = init_adapter(hp["adapter_layers"], seed)
        self.adapters = {u: linear_stack(adapter, last=torch.nn.Sigmoid()) for u in range(ds.num_users)}
        if self.host == "fedmf":
            self.users = {u: torch.nn.Parameter(user.clone()) for u in range(ds.num_users)}
        else:
            w, b = init_linear_stack([d, 1], seed, "init-score-head")
            self.heads = {u: linear_stack([w, b]) for u in range(ds.num_users)}
        self.trained = False

    def merged(self, u, local, global_):
        delta = global_ - local
        return local + self.adapters[u](torch.cat((local, delta), dim=-1)) * delta

    def logits(self, u, rows):
        if self.host == "fedmf":
            return (self.users[u] * rows).sum(-1)
        return self.heads[u](rows).view(-1)

    def train_round(self, t, samples):
        plan = plan_of(self.ds, self.rc, samples)
        hp, opt_cfg = self.rc["method"], self.rc["method"]["optimizer"]
        server, losses = self.server, {}
        for rank, u in enumerate(plan.clients.tolist()):
            start = self.local[u]
            if self.trained:
                with torch.no_grad():
                    start = self.merged(u, start, server)
            emb = torch.nn.Embedding.from_pretrained(start.clone(), freeze=False)
            merge = self.trained

            def forward(items, u=u, emb=emb, merge=merge):
                rows = emb(items)
                if merge:
                    rows = self.merged(u, rows, server[items])
                return torch.sigmoid(self.logits(u, rows))

            sgd = opt_cfg["name"] == "sgd"
            make = torch.optim.SGD if sgd else torch.optim.Adam
            opt_ad = make(self.adapters[u].parameters(), lr=hp["adapter_lr"]) if merge else None
            if self.host == "fedmf":
                host_opts = [make([self.users[u], emb.weight], lr=opt_cfg["lr"]["embedding"])]
            else:
                lr_items = opt_cfg["lr"]["items"] * self.ds.num_items * hp["lr_eta"]
                host_opts = [
                    make(self.heads[u].parameters(), lr=opt_cfg["lr"]["head"]),
                    make(emb.parameters(), lr=lr_items),
                ]

            def step(items, labels, forward=forward, opt_ad=opt_ad, host_opts=host_opts):
                if opt_ad is not None:
                    opt_ad.zero_grad()
                    BCE(forward(items), labels).backward()
                    opt_ad.step()
                for opt in host_opts:
                    opt.zero_grad()
                    loss = BCE(forward(items), labels)
                    loss.backward()
                    opt.step()
                return loss.item()

            threshold = self.rc["training"]["early_stop_threshold"]
            losses[u], _ = epoch_loop(plan.client_batches(rank), int(plan.batches_per_epoch[rank]), threshold, step)
            self.local[u] = emb.weight.data.clone()
        tables = torch.stack([self.local[u] for u in range(self.ds.num_users)]).double()
        if self.host == "fedmf":
            counts = plan.sample_counts[torch.argsort(plan.clients)].double()
            self.server = torch.tensordot(counts / counts.sum(), tables, dims=1).float()
        else:
            self.server = tables.mean(0).float()
        self.trained = True
        return losses

    def check_state(self, engine, close):
        close(engine.global_table, self.server)
        for u in range(self.ds.num_users):
            close(engine.local[u], self.local[u])

    @torch.no_grad()
    def scores(self, candidates):
        out = []
        for u in range(self.ds.num_users):
            c = candidates[u]
            out.append(torch.sigmoid(self.logits(u, self.merged(u, self.local[u][c], self.server[c]))))
        return torch.stack(out)
