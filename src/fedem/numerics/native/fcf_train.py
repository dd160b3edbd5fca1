"""Plain FCF local training of a client group in C++ (fcf_train.cpp), client by client."""

from __future__ import annotations

import torch

from fedem.numerics.native import check_losses, load
from fedem.training.schedule import RoundPlan


def train_fcf_clients(
    plan: RoundPlan, user_emb: torch.Tensor, pool_rows: torch.Tensor, lr: float, adam_cfg: dict, threshold: float
) -> torch.Tensor:
    """As fedem.training.fcf_fast.train_fcf_group on the CPU: trains user_emb [C, d] and pool_rows [R, d]
    in place; returns each client's running loss [C] (float64)."""
    return check_losses(
        load("fcf_train").train_fcf_clients(
            pool_rows,
            user_emb,
            plan.flat_rows,
            plan.flat_labels,
            plan.flat_valid,
            plan.step_base,
            plan.num_steps,
            plan.batches_per_epoch,
            plan.pool_offsets,
            plan.batch_size,
            lr,
            adam_cfg["beta1"],
            adam_cfg["beta2"],
            adam_cfg["eps"],
            threshold,
        )
    )
