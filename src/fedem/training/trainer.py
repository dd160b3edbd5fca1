"""Local training of a group of clients through a backbone: the layer every method trains with.

`train_clients` runs a round's lockstep schedule (`RoundPlan`) for the plan's clients, with the
per-client early stop of `run_local_training`. Each mini-batch is one or more sub-steps (FedEM and
PFedRec take one optimizer step on one parameter set, then a fresh forward and a step on another);
each sub-step is a forward of the backbone over the stacked batch, the per-client batch-mean BCE
(nn.BCELoss on sigmoid outputs, saturation included) plus the backbone's extra loss, autograd of
their sum (clients are independent: each client's slice is its own gradient), and a masked step of
the stacked optimizers.

Item-row parameters live in one of two layouts (`rows`):
- "pool": only the rows a client's samples touch this round, [R, d] in plan order. Exact whenever
  no other row can move: a fresh optimizer every round and no term that touches untouched rows.
- "dense": the whole table of every client, [C, I, d]; every row moves (weight decay on the table,
  a full-table regulariser, a proximal term).
A backbone may offer a fast path (closed-form gradients, native C++ loops) for a configuration; it is
used unless training.kernels is "autograd", and tests prove it equal to this path."""

from __future__ import annotations

import torch

from fedem.errors import ConfigError
from fedem.training.backbone import Backbone
from fedem.training.local_loop import run_local_training
from fedem.training.optim import OptimizerSpec
from fedem.training.schedule import RoundPlan

POOL, DENSE = "pool", "dense"


def masked_bce(logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """Per-client mean BCE [C] of sigmoid(logits) over the valid samples, as nn.BCELoss computes it
    (log terms clamped at -100, so a saturated prediction gets zero gradient)."""
    per_sample = torch.nn.functional.binary_cross_entropy(torch.sigmoid(logits), labels, reduction="none")
    return torch.where(valid, per_sample, torch.zeros_like(per_sample)).sum(1) / count


def check_layout(backbone: Backbone, optimizer: OptimizerSpec, rows: str, extra: bool) -> None:
    if rows not in (POOL, DENSE):
        raise ConfigError(f"row layout '{rows}' is not one of {POOL}, {DENSE}")
    if rows == POOL:
        decayed = [s.name for s in backbone.trainable if s.item_rows and optimizer.weight_decay.get(s.lr_group)]
        if decayed:
            raise ConfigError(
                f"weight decay on item rows ({', '.join(decayed)}) moves every row of a table: train with rows='dense'"
            )
        if extra:
            raise ConfigError(
                "a backbone with an extra loss term must train with rows='dense' (the term may "
                "touch rows no sample touches)"
            )


def train_clients(
    backbone: Backbone,
    plan: RoundPlan,
    tensors: dict[str, torch.Tensor],
    optimizer: OptimizerSpec,
    threshold: float,
    kernels: str,
    rows: str = POOL,
    step_groups: tuple[tuple[str, ...], ...] | None = None,
) -> torch.Tensor:
    """Trains the plan's clients in place. tensors: every spec's tensor in plan (rank) order: dense
    parameters [C, ...]; item-row parameters [R, d] (pool rows) or [C, I, d] (dense). step_groups: the
    lr groups each sub-step of a mini-batch trains, in order (default: all groups in one step).
    Returns each client's running loss [C] (float64) of the last sub-step, the value the released
    codes report (and early-stop on)."""
    groups = step_groups or (tuple(dict.fromkeys(s.lr_group for s in backbone.trainable)),)
    missing = [s.name for s in backbone.specs if s.name not in tensors]
    if missing:
        raise KeyError(f"train_clients: no tensor for {missing}")
    has_extra = type(backbone).extra_loss is not Backbone.extra_loss
    check_layout(backbone, optimizer, rows, has_extra)
    device = next(iter(tensors.values())).device
    fast = backbone.fast_path(kernels, device, optimizer, rows, groups)
    if fast is not None:
        return fast(plan, tensors, optimizer, threshold)
    return _train_autograd(backbone, plan, tensors, optimizer, threshold, kernels, rows, groups)


def _train_autograd(backbone, plan, tensors, optimizer, threshold, kernels, rows, groups) -> torch.Tensor:
    compiled = kernels in ("compiled", "native")
    specs = backbone.specs
    substeps = []  # per sub-step: the tensors it trains, and one optimizer per lr group over them
    for groups_now in groups:
        optimizers = []
        for group in groups_now:
            names = [s.name for s in backbone.trainable if s.lr_group == group]
            if not names:
                raise ConfigError(
                    f"parameter group '{group}' of step {groups_now} trains no parameter of this backbone"
                )
            optimizers.append((names, optimizer.make(group, [tensors[n] for n in names], compiled=compiled)))
        substeps.append(optimizers)
    device = next(iter(tensors.values())).device
    pool_client = plan.pool_client.to(device)
    pool_items = plan.pool_items.to(device)
    d_of = {s.name: tensors[s.name].shape[-1] for s in specs if s.item_rows}

    def inputs(ck, rk, batch, trainable):
        """Leaves for the trainable tensors of this sub-step (views of the stacked state, detached)
        and the backbone's inputs gathered from them."""
        leaves, p, full = {}, {}, {}
        flat_rows = batch.rows.reshape(-1)
        for s in specs:
            whole = tensors[s.name]
            if s.item_rows and rows == POOL:
                view = whole[:rk]
            else:
                view = whole[:ck]
            leaf = view.detach().requires_grad_(s.name in trainable)
            leaves[s.name] = leaf
            if s.item_rows:
                if rows == POOL:
                    p[s.name] = leaf.index_select(0, flat_rows).view(ck, -1, d_of[s.name])
                else:
                    items = pool_items.index_select(0, flat_rows).view(ck, -1)
                    p[s.name] = leaf[torch.arange(ck, device=device).unsqueeze(1), items]
                    full[s.name] = leaf
            else:
                p[s.name] = leaf
                full[s.name] = leaf
        return leaves, p, full

    pooled = {s.name: s.item_rows and rows == POOL for s in specs}

    def step(k, batch, active):
        ck, rk = plan.active_counts[k], plan.pool_prefix(k)
        client_mask = None if bool(active.all()) else active
        row_mask = None if client_mask is None else client_mask[pool_client[:rk]]
        lr_scale = optimizer.lr_scale(k)
        loss = None
        for optimizers in substeps:
            names = [n for group_names, _ in optimizers for n in group_names]
            leaves, p, full = inputs(ck, rk, batch, set(names))
            loss = masked_bce(backbone.logits(p), batch.labels, batch.valid, batch.count)
            extra = backbone.extra_loss(full)
            if extra is not None:
                loss = loss + extra
            grads = dict(zip(names, torch.autograd.grad(loss.sum(), [leaves[n] for n in names])))
            for group_names, opt in optimizers:
                for i, name in enumerate(group_names):
                    prefix = rk if pooled[name] else ck
                    opt.grads[i][:prefix].copy_(grads[name])
                    opt.step_one(i, k + 1, prefix, row_mask if pooled[name] else client_mask, lr_scale)
        return loss.detach()

    return run_local_training(plan, threshold, step)
