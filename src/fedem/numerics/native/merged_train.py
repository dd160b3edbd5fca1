"""FedEM's merged-group local training in C++ (merged_train.cpp), client by client."""

from __future__ import annotations

import torch

from fedem.numerics.native import check_losses, load
from fedem.training.schedule import RoundPlan


def train_merged_clients(
    plan: RoundPlan,
    pool_l: torch.Tensor,
    pool_g: torch.Tensor,
    users: torch.Tensor,
    adapter: list[torch.Tensor],
    lr_embedding: float,
    lr_adapter: float,
    adam_cfg: dict,
    threshold: float,
) -> torch.Tensor:
    """Steps (a) and (b) of every mini-batch (FEDEM.md) for the plan's clients, in rank order: trains
    pool_l [R, d], users [C, d] and the adapter ([W1, b1, ...], each [C, ...]) in place; pool_g
    [R, d] is each pool row's global row. Returns each client's running loss [C] (float64)."""
    return check_losses(
        load("merged_train").train_merged_clients(
            pool_l,
            pool_g,
            users,
            adapter,
            plan.flat_rows,
            plan.flat_labels,
            plan.flat_valid,
            plan.step_base,
            plan.num_steps,
            plan.batches_per_epoch,
            plan.pool_offsets,
            plan.batch_size,
            lr_embedding,
            lr_adapter,
            adam_cfg["beta1"],
            adam_cfg["beta2"],
            adam_cfg["eps"],
            threshold,
        )
    )
