"""A plain, slow, per-client reference of FedEM's merging plugged into FedMF and PFedRec (Table 3),
written the way the FedEM authors' code merges (model/engine.py: an in-place merge at the start of the
round, the merge again in every forward, an adapter step before each of the host's steps), with the
hosts' own per-client steps (tests/reference_baselines.py). One nn.Module and fresh torch.optim
optimizers per client per round; shares only the initial state, negatives and batch order."""

from __future__ import annotations

import torch

from fedem.methods.adapter import init_adapter
from fedem.training.backbones import init_fcf, init_linear_stack

from reference_baselines import BCE, epoch_loop, linear_stack, plan_of


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
