"""`gpfedrec`: GPFedRec (Zhang et al., KDD 2024) as its released code runs it (docs/methods/gpfedrec.md).

Each client has a private user embedding and a private MLP tower on concat(p_u, q_i) (the NCF tower),
and trains, one epoch per round, the item table it receives (the mean of the server's personalised
tables) with the loss BCE + reg * MSE(Q_u, r_u): a pull of the WHOLE table toward its personalised
table r_u, so every row moves at every step (the dense row layout). Three SGD groups: the tower at lr,
the user embedding at lr * lr_eta - lr, the table at lr * num_items * lr_eta - lr. The server builds a
user graph from the uploaded tables (the released code keeps, for each user, the users whose cosine
DISTANCE to it exceeds the mean distance: `graph: distance`; `similarity` keeps the more similar ones),
averages the tables over each user's neighbours (r_u, mp_layers times) and sends r_u and their mean.
Clients are evaluated with their own trained tables.

Plug point (`em-plugin`, Table 3): with `self.plug` set, a client starts the round from its own
(merged) table `plug.local[u]` (= `self.tables`) instead of the server's mean, and the plug's merge
runs inside the local loop (`plug.loop_merge`); everything else is unchanged."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from fedem.methods.base import Method, MethodContext
from fedem.methods.fedncf import check_tower
from fedem.rng import torch_gen
from fedem.training.backbone import ParamSpec
from fedem.training.backbones import init_fcf, init_linear_stack
from fedem.training.local_loop import run_local_training
from fedem.training.ncf_tower import SplitNCF
from fedem.training.schedule import RoundPlan, RoundSamples
from fedem.training.trainer import masked_bce


class GPFedRecTower(SplitNCF):
    """The NCF tower (its first layer split: `ncf_tower`) with a private MLP and user embedding, each in
    its own lr group."""

    def __init__(self, layers: list[int]):
        super().__init__(layers, mlp_shared=False, items_shared=True)
        self.specs = (
            ParamSpec("user", lr_group="user"),
            ParamSpec("items", item_rows=True, shared=True, lr_group="items"),
            *(s for s in self.specs if s.name.startswith("mlp.")),
        )


def symmetric_gram(flat: torch.Tensor, block: int = 256) -> torch.Tensor:
    """flat @ flat.T [n, n], exactly symmetric, computing only the blocks on and above the diagonal (half the
    multiply-adds of one GEMM: on lastfm-2k the Gram is an n x n x (I d) product, the server's largest)."""
    n = flat.shape[0]
    gram = torch.empty((n, n), dtype=flat.dtype, device=flat.device)
    for start in range(0, n, block):
        stop = min(start + block, n)
        rows = flat[start:stop] @ flat[start:].T
        width = stop - start
        rows[:, :width] = rows[:, :width].triu() + rows[:, :width].triu(1).T  # exactly symmetric
        gram[start:stop, start:] = rows
        gram[start:, start:stop] = rows.T
    return gram


def relation_graph(tables: torch.Tensor, hp: dict) -> torch.Tensor:
    """A [U, U] (row-stochastic) from the uploaded tables [U, I, d], as utils.py builds it:
    construct_user_relation_graph_via_item (sklearn's cosine distance, 0 on the diagonal) then
    select_topk_neighboehood."""
    flat = tables.reshape(tables.shape[0], -1)
    norms = flat.norm(dim=1).clamp(min=1e-12)  # F.normalize's floor
    cosine = symmetric_gram(flat).div_(norms.unsqueeze(1)).div_(norms.unsqueeze(0))
    distance = (1 - cosine).clamp(0, 2)
    distance.fill_diagonal_(0)
    relation = distance if hp["graph"] == "distance" else 1 - distance
    n = relation.shape[0]
    if hp["neighborhood_size"] > 0:
        k = hp["neighborhood_size"]
        keep = torch.zeros_like(relation, dtype=torch.bool).scatter_(1, relation.topk(k, dim=1).indices, True)
    else:
        keep = relation > relation.mean() * hp["neighborhood_threshold"]
    counts = keep.sum(dim=1, keepdim=True)
    graph = keep.to(tables.dtype) / counts.clamp(min=1)
    lonely = counts.squeeze(1) == 0
    graph[lonely, torch.arange(n, device=tables.device)[lonely]] = 1.0
    return graph


class GPFedRec(Method):
    name = "gpfedrec"

    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        hp, d = ctx.hparams, ctx.training["latent_dim"]
        check_tower(self.name, hp["mlp_layers"], d)
        self.backbone = GPFedRecTower(hp["mlp_layers"])
        self.latent_dim = d
        items, user = init_fcf(self.num_items, d, ctx.seed)
        template = {
            "user": user,
            **dict(zip(self.backbone.mlp_names, init_linear_stack(hp["mlp_layers"], ctx.seed, "init-mlp"))),
        }
        self.state = {n: t.to(self.device).expand((self.num_users,) + t.shape).clone() for n, t in template.items()}
        items = items.to(self.device)
        self.global_table = items.clone()  # every client's start point next round
        self.targets = items.expand(self.num_users, -1, -1).clone()  # r_u
        self.tables = items.expand(self.num_users, -1, -1).clone()  # each client's trained table (evaluated)
        lrs = dict(self.optimizer.lrs)  # engine.py's formulas, all clients sampled every round
        lrs["user"] = lrs["user"] * hp["lr_eta"] - lrs["user"]
        lrs["items"] = lrs["items"] * self.num_items * hp["lr_eta"] - lrs["items"]
        self.optimizer = dataclasses.replace(self.optimizer, lrs=lrs)
        self.plug = None  # set by em-plugin

    def train_round(self, round_index: int, samples: RoundSamples, negatives: np.ndarray) -> torch.Tensor:
        plan = samples.plan()
        dev = self.device
        ranked = plan.clients.to(dev)
        pool_items = plan.pool_items.to(dev)
        owners = ranked[plan.pool_client.to(dev)]
        tensors = {n: t.index_select(0, ranked) for n, t in self.state.items()}
        # where each client starts: the server's mean, or (plugged) its own merged table
        start = self.global_table if self.plug is None else self.plug.local
        tensors["items"] = self.global_table[pool_items] if self.plug is None else start[owners, pool_items]
        target_rows = self.targets[owners, pool_items]
        # every other row of a client's table moves only by the pull: the released loss's full-table term
        off_pool = (start - self.targets).square().sum(dim=(1, 2)).index_select(0, ranked)
        off_pool = off_pool - torch.zeros_like(off_pool).index_add_(
            0, plan.pool_client.to(dev), (tensors["items"] - target_rows).square().sum(1)
        )
        steps, losses = train_pulled_clients(
            self.backbone,
            plan,
            tensors,
            target_rows,
            off_pool,
            self.optimizer,
            self.ctx.hparams["reg"],
            self._pull_rate(),
            self.num_items * self.latent_dim,
            merge=None if self.plug is None else self.plug.loop_merge(plan, pool_items),
        )
        for n, t in self.state.items():
            t.index_copy_(0, ranked, tensors[n])
        # the rows no sample touched: r_u + (1 - c)^K_u (G - r_u) after a client's K_u steps
        keep = torch.ones(self.num_users, dtype=torch.float64, device=dev)
        keep.index_copy_(0, ranked, (1 - self._pull_rate()) ** steps.double())
        keep = keep.to(self.tables.dtype).view(-1, 1, 1)
        torch.sub(start, self.targets, out=self.tables)
        self.tables.mul_(keep).add_(self.targets)
        self.tables[owners, pool_items] = tensors["items"]
        self._aggregate(round_index)
        out = torch.empty(self.num_users, dtype=torch.float64, device=dev)
        out[ranked] = losses
        return out

    def _pull_rate(self) -> float:
        """c: one SGD step of reg * mean((Q - r)^2) moves every row by c (Q - r)."""
        return self.optimizer.lrs["items"] * 2 * self.ctx.hparams["reg"] / (self.num_items * self.latent_dim)

    def _aggregate(self, round_index: int) -> None:
        hp = self.ctx.hparams
        uploads = self.tables
        if hp["dp"] > 0:  # Laplace(0, dp) per entry of every upload; the client keeps its clean table
            gen = torch_gen(self.ctx.seed, "upload-noise", round_index)
            # Laplace(0, b) = b * (E1 - E2) with E1, E2 ~ Exp(1)
            e1, e2 = (torch.empty(uploads.shape).exponential_(generator=gen) for _ in range(2))
            uploads = uploads + (hp["dp"] * (e1 - e2)).to(self.device)
        graph = relation_graph(uploads, hp)
        flat = uploads.reshape(self.num_users, -1)
        for _ in range(hp["mp_layers"]):
            flat = graph @ flat
        self.targets = flat.view_as(uploads).contiguous()
        self.global_table = self.targets.mean(dim=0)

    def scores_on(self, users: torch.Tensor, items: torch.Tensor | None, rows: torch.Tensor) -> torch.Tensor:
        """Scores of `users` with the given rows of their item tables (items: their ids, None = all)."""
        p = {n: self.state[n][users] for n in self.state}
        return self.backbone.scores({**p, "items": rows})

    def score(self, users, items):
        return self.scores_on(users, items, self.tables[users.unsqueeze(1), items])

    def score_all(self, users):
        return self.scores_on(users, None, self.tables.index_select(0, users))


def train_pulled_clients(
    backbone, plan: RoundPlan, tensors, target_rows, off_pool, opt, reg, pull_rate, entries, merge=None
):
    """One round of the released client loss BCE + reg * MSE(Q_u, r_u) (the mean over all I x d = `entries`
    entries of the table) for the plan's clients, on their pool rows: exactly the dense steps restricted
    to those rows (every pool row is pulled at every step, the batch rows also take the BCE gradient).
    tensors: user [C, d], the tower [C, ...], items: pool rows [R, d], trained in place; target_rows [R, d]:
    r_u on them; off_pool [C]: the sum of (G - r_u)^2 over each client's other rows, whose pull is the
    closed form (1 - pull_rate) per step (the reported loss includes it, as the released one does).
    merge: a plug's LoopMerge (em-plugin) or None: before each step the plug's adapter takes its step
    on the BCE of merged rows, and the step's forward scores the merged rows.
    Returns (steps each client took [C], running losses [C])."""
    dev = tensors["items"].device
    d = tensors["items"].shape[1]
    pool_client = plan.pool_client.to(dev)
    trainable = [s.name for s in backbone.trainable]
    optimizers = {n: opt.make(backbone.spec(n).lr_group, [tensors[n]]) for n in trainable}
    steps = torch.zeros(plan.num_clients, dtype=torch.long, device=dev)
    shrink = (1 - pull_rate) ** 2  # the off-pool squared deviations shrink by (1 - c)^2 per step

    def step(k, batch, active):
        ck, rk = plan.active_counts[k], plan.pool_prefix(k)
        client_mask = None if bool(active.all()) else active
        row_mask = None if client_mask is None else client_mask[pool_client[:rk]]
        leaves = {n: tensors[n][: rk if n == "items" else ck].detach().requires_grad_() for n in trainable}
        rows = leaves["items"].index_select(0, batch.rows.reshape(-1)).view(ck, -1, d)
        if merge is not None:  # merged rows at the valid samples (the padding stays unmerged and masked)
            fixed = {n: leaves[n].detach() for n in trainable}
            client, slot = batch.valid.nonzero(as_tuple=True)
            flat = batch.rows[client, slot]

            def bce_of(merged):
                merged_rows = rows.detach().index_put((client, slot), merged)
                return masked_bce(
                    backbone.logits({**fixed, "items": merged_rows}), batch.labels, batch.valid, batch.count
                )

            merge.adapter_step(k, ck, client_mask, client, rows[client, slot], flat, bce_of)
            rows = rows.index_put((client, slot), merge.merged(ck, client, rows[client, slot], flat))
        loss = masked_bce(backbone.logits({**leaves, "items": rows}), batch.labels, batch.valid, batch.count)
        pulled = (leaves["items"] - target_rows[:rk]).square().sum(1)
        on_pool = torch.zeros(ck, dtype=pulled.dtype, device=dev).index_add(0, pool_client[:rk], pulled)
        off = off_pool[:ck] * shrink ** steps[:ck].double()
        loss = loss + reg * (on_pool + off.to(on_pool.dtype)) / entries
        grads = torch.autograd.grad(loss.sum(), [leaves[n] for n in trainable])
        for n, g in zip(trainable, grads):
            prefix, mask = (rk, row_mask) if n == "items" else (ck, client_mask)
            optimizers[n].grads[0][:prefix].copy_(g)
            optimizers[n].step_one(0, k + 1, prefix, mask, 1.0)
        steps[:ck] += active.long()
        return loss.detach()

    losses = run_local_training(plan, 0.0, step)  # threshold 0: the released loop has no early stop
    return steps, losses
