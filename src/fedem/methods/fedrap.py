"""`fedrap`: FedRAP (Li, Long, Zhou, ICLR 2024) as its released code runs it (docs/methods/fedrap.md).

Each client scores with sigmoid(w_u . (D_u[i] + C[i]) + b_u): D_u is a private item table kept across
rounds, C the global one (the server's unweighted mean of the clients' trained copies). The loss is
BCE - lambda * MSE(D_u, C) + mu * L1(C) over the batch rows; one SGD step per mini-batch with coupled
weight decay on every parameter, the learning rate decayed by `step_decay` after every mini-batch and
by `round_decay` after every round.

SGD's weight decay moves every row of both tables at every step, rows no sample touches included: they
only shrink, by (1 - lr_k * wd) at step k. So the rows a client's samples touch (its pool rows) take
exact dense steps, and every other row is scaled once at the end of the round by the product of the
client's factors. The same arithmetic as the dense tables, at the cost of the pool rows.

Plug point (`em-plugin`, Table 3): with `self.plug` set, a client starts the round from its own (merged)
copy of C, `plug.local[u]`, instead of the server's, and the plug's merge runs inside the local loop
(`plug.loop_merge`: the merged rows of C are what the score and the loss's terms read); the server's C is
the mean of the clients' whole copies. D_u, the head and the schedule are unchanged."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from fedem.methods.base import Method, MethodContext
from fedem.rng import torch_gen
from fedem.training.backbones import init_fcf, init_linear_stack
from fedem.training.local_loop import run_local_training
from fedem.training.schedule import RoundPlan, RoundSamples

HEAD, TABLES = "head", "tables"  # lr groups: the score head (lr_network), both item tables (lr_args)


def regulariser_weights(hp: dict, round_index: int) -> tuple[float, float]:
    """(lambda, mu) of a round. The released engine updates a tanh curriculum but its loss reads the
    constants (curriculum `off`); `tanh` is the schedule the engine computes: 0 in round 0, then
    tanh((t - 1) / 10) times the constants."""
    lam, mu = hp["lambda"], hp["mu"] if hp["regular"] != "none" else 0.0
    if hp["curriculum"] == "tanh":
        factor = 0.0 if round_index == 0 else math.tanh((round_index - 1) / 10)
        lam, mu = lam * factor, mu * factor
    return lam, mu


class FedRAP(Method):
    name = "fedrap"

    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        d = ctx.training["latent_dim"]
        personal, _ = init_fcf(self.num_items, d, ctx.seed)
        # train.py draws the global table as its own nn.Embedding, apart from the model's
        self.common = torch.randn((self.num_items, d), generator=torch_gen(ctx.seed, "init-common-table"))
        self.common = self.common.to(self.device)
        weight, bias = init_linear_stack([d, 1], ctx.seed, "init-score-head")
        template = {"head.weight": weight[0], "head.bias": bias, "personal": personal}
        self.state = {n: t.to(self.device).expand((self.num_users,) + t.shape).clone() for n, t in template.items()}
        self.plug = None  # set by em-plugin

    def _round_optimizer(self, round_index: int):
        decay = self.ctx.hparams["round_decay"] ** round_index
        return dataclasses.replace(self.optimizer, lrs={g: lr * decay for g, lr in self.optimizer.lrs.items()})

    def train_round(self, round_index: int, samples: RoundSamples, negatives: np.ndarray) -> torch.Tensor:
        plan = samples.plan()
        dev = self.device
        ranked = plan.clients.to(dev)
        pool_items = plan.pool_items.to(dev)
        owners = ranked[plan.pool_client.to(dev)]
        received = self.common[pool_items] if self.plug is None else self.plug.local[owners, pool_items]
        tensors = {
            "head.weight": self.state["head.weight"][ranked],
            "head.bias": self.state["head.bias"][ranked],
            "personal": self.state["personal"][owners, pool_items],
            "common": received.clone(),
        }
        opt = self._round_optimizer(round_index)
        lam, mu = regulariser_weights(self.ctx.hparams, round_index)
        merge = None if self.plug is None else self.plug.loop_merge(plan, pool_items)
        shrink, losses = train_fedrap_clients(
            plan, tensors, opt, lam, mu, self.ctx.training["early_stop_threshold"], self.ctx.hparams["regular"], merge
        )
        # every untouched row of a client's tables shrank by its product of (1 - lr_k * wd)
        self.state["head.weight"][ranked] = tensors["head.weight"]
        self.state["head.bias"][ranked] = tensors["head.bias"]
        scale = shrink.to(self.state["personal"].dtype)
        by_user = torch.ones(self.num_users, dtype=scale.dtype, device=dev).index_copy_(0, ranked, scale)
        self.state["personal"].mul_(by_user.view(-1, 1, 1))
        self.state["personal"][owners, pool_items] = tensors["personal"]
        if self.plug is None:
            # unweighted mean of the uploads: C * mean(s_u) off the pool rows, each client's own rows on them
            n = plan.num_clients
            self.common.mul_(scale.mean())
            own_scale = scale[plan.pool_client.to(dev)].unsqueeze(1)
            self.common.index_add_(0, pool_items, (tensors["common"] - own_scale * received) / n)
        else:  # each client's own whole copy of C, shrunk and trained; their mean
            local = self.plug.local
            local.mul_(by_user.view(-1, 1, 1))
            local[owners, pool_items] = tensors["common"]
            self.common = local.index_select(0, ranked).mean(0)
        out = torch.empty(self.num_users, dtype=torch.float64, device=dev)
        out[ranked] = losses
        return out

    def scores_on(self, users: torch.Tensor, items: torch.Tensor | None, common: torch.Tensor) -> torch.Tensor:
        """Scores of `users` with the given rows of C (items: their ids, None = all)."""
        personal = self.state["personal"][users] if items is None else self.state["personal"][users.unsqueeze(1), items]
        rows = personal + common
        return torch.sigmoid(fedrap_logits(self.state["head.weight"][users], self.state["head.bias"][users], rows))

    def score(self, users, items):
        return self.scores_on(users, items, self.common[items])

    def score_all(self, users):
        return self.scores_on(users, None, self.common)


def fedrap_logits(weight: torch.Tensor, bias: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """weight [C, d], bias [C, 1], rows (D_u + C) [C, B, d] -> logits [C, B]."""
    return torch.bmm(rows, weight.unsqueeze(2)).squeeze(2) + bias


def _regulariser(kind: str, common: torch.Tensor) -> torch.Tensor:
    """Per sample, the sum over d of the regulariser on its row of C (l1 |C|, l2 C^2; `none` has mu = 0)."""
    return (common.square() if kind == "l2" else common.abs()).sum(1)


def train_fedrap_clients(
    plan: RoundPlan,
    tensors: dict[str, torch.Tensor],
    opt,
    lam: float,
    mu: float,
    threshold: float,
    regular: str,
    merge=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Trains the plan's clients in place (tensors: head.weight [C, d], head.bias [C, 1], personal and
    common pool rows [R, d]). merge: a plug's LoopMerge (em-plugin) or None: before each step the plug's
    adapter takes its step on the loss of merged rows of C, and the step's loss reads the merged rows.
    Returns (each client's product of (1 - lr_k * wd) over its steps [C] float64,
    each client's running loss [C])."""
    dev = tensors["common"].device
    names = ("head.weight", "head.bias", "personal", "common")
    rows = {"personal", "common"}  # pool-row tensors; the head is one row per client
    groups = {"head.weight": HEAD, "head.bias": HEAD, "personal": TABLES, "common": TABLES}
    optimizers = {n: opt.make(groups[n], [tensors[n]]) for n in names}
    table_wd = opt.weight_decay.get(TABLES, 0.0)
    shrink = torch.ones(plan.num_clients, dtype=torch.float64, device=dev)
    pool_client = plan.pool_client.to(dev)
    d = tensors["common"].shape[1]

    def step(k, batch, active):
        ck, rk = plan.active_counts[k], plan.pool_prefix(k)
        client_mask = None if bool(active.all()) else active
        row_mask = None if client_mask is None else client_mask[pool_client[:rk]]
        lr_scale = opt.lr_scale(k)
        leaves = {n: tensors[n][: rk if n in rows else ck].detach().requires_grad_() for n in names}
        # only the valid samples: with batch 2048 a padded [C, B] batch is mostly padding
        client, slot = batch.valid.nonzero(as_tuple=True)
        flat = batch.rows[client, slot]
        count = batch.count.to(tensors["common"].dtype)

        def loss_of(leaves, personal, common):
            weight, bias = leaves["head.weight"].index_select(0, client), leaves["head.bias"].index_select(0, client)
            logits = (weight * (personal + common)).sum(1) + bias.squeeze(1)
            probs = torch.sigmoid(logits)
            # nn.BCELoss, nn.MSELoss and nn.L1Loss: means over the batch's samples (x d for the tables)
            per_sample = torch.nn.functional.binary_cross_entropy(probs, batch.labels[client, slot], reduction="none")
            per_sample = per_sample - (lam / d) * (personal - common).square().sum(1)
            per_sample = per_sample + (mu / d) * _regulariser(regular, common)
            return torch.zeros(ck, dtype=per_sample.dtype, device=dev).index_add(0, client, per_sample) / count

        personal = leaves["personal"].index_select(0, flat)
        common = leaves["common"].index_select(0, flat)
        if merge is not None:
            fixed = {n: leaves[n].detach() for n in names}
            fixed_personal = personal.detach()
            merge.adapter_step(k, ck, client_mask, client, common, flat, lambda m: loss_of(fixed, fixed_personal, m))
            common = merge.merged(ck, client, common, flat)
        loss = loss_of(leaves, personal, common)
        grads = torch.autograd.grad(loss.sum(), [leaves[n] for n in names])
        for n, g in zip(names, grads):
            prefix, mask_n = (rk, row_mask) if n in rows else (ck, client_mask)
            optimizers[n].grads[0][:prefix].copy_(g)
            optimizers[n].step_one(0, k + 1, prefix, mask_n, lr_scale)
        factor = 1.0 - opt.lrs[TABLES] * lr_scale * table_wd
        shrink[:ck] = torch.where(active, shrink[:ck] * factor, shrink[:ck])
        return loss.detach()

    losses = run_local_training(plan, threshold, step)
    return shrink, losses
