"""FCF's fast path (the `FCF` backbone's, fedem.training.backbones): score = sigmoid(<p_u, q_i>), BCE
loss, Adam re-created every round, gradients in closed form (or the native C++ loop on the CPU).
tests/test_training_layer.py proves it equal to the autograd path."""

from __future__ import annotations

import torch

from fedem.numerics.bce import bce_forward_backward
from fedem.numerics.compiled import maybe_compiled
from fedem.numerics.native.fcf_train import train_fcf_clients
from fedem.training.local_loop import run_local_training
from fedem.training.optim import StackedAdam
from fedem.training.schedule import RoundPlan


def bce_loss_and_grad(logits, labels, valid, count):
    """Per-client mean BCE loss [C] and d(loss)/d(logit) [C, B] (one fused loop when compiled)."""
    _, loss, grad_logit = bce_forward_backward(logits, labels, valid, count)
    return loss, grad_logit


def scatter_row_grads(
    grad_rows_out: torch.Tensor, rows: torch.Tensor, grad_logit: torch.Tensor, user: torch.Tensor
) -> None:
    """grad_rows_out[rows[c, b]] += grad_logit[c, b] * user[c] (rows [C*B] flat; a row may repeat).
    Compiled, the outer product is never materialised and the scatter is a plain loop."""
    d = user.shape[1]
    grad_rows_out.index_add_(0, rows, (grad_logit.unsqueeze(2) * user.unsqueeze(1)).reshape(-1, d))


def train_fcf_group(
    plan: RoundPlan,
    user_emb: torch.Tensor,
    pool_rows: torch.Tensor,
    lr: float,
    adam_cfg: dict,
    threshold: float,
    kernels: str,
) -> torch.Tensor:
    """Local FCF training of the plan's clients, in place. user_emb [C, d] in plan (rank) order,
    pool_rows [R, d] the plan's pool. Returns each client's running loss [C]."""
    betas = (adam_cfg["beta1"], adam_cfg["beta2"], adam_cfg["eps"])
    if kernels == "native" and pool_rows.device.type == "cpu":
        return train_fcf_clients(plan, user_emb, pool_rows, lr, adam_cfg, threshold)
    compiled = kernels != "eager"
    user_opt = StackedAdam([user_emb], lr, *betas, compiled=compiled)
    pool_opt = StackedAdam([pool_rows], lr, *betas, compiled=compiled)
    grad_user_buf, grad_pool_buf = user_opt.grads[0], pool_opt.grads[0]
    # The authors' BCE zeroes the gradient where sigmoid rounds to exactly 0 or 1, so a one-ulp
    # difference in sigmoid flips a gradient between 0 and ~1. Inductor's CPU code rounds as eager
    # torch does; its CUDA (Triton) sigmoid does not always (seen: item rows 3e-3 off the reference
    # after 3 rounds), so on CUDA the BCE stays eager.
    bce = maybe_compiled(bce_loss_and_grad, compiled and pool_rows.device.type == "cpu")
    scatter = maybe_compiled(scatter_row_grads, compiled)
    pool_client = plan.pool_client.to(pool_rows.device)
    d = pool_rows.shape[1]

    def step(k, batch, active):
        ck, rk = plan.active_counts[k], plan.pool_prefix(k)
        p = user_emb[:ck]
        rows = batch.rows.reshape(-1)
        q = torch.index_select(pool_rows[:rk], 0, rows).view(ck, -1, d)
        logits = torch.bmm(q, p.unsqueeze(2)).squeeze(2)
        loss, g_logit = bce(logits, batch.labels, batch.valid, batch.count)
        torch.bmm(g_logit.unsqueeze(1), q, out=grad_user_buf[:ck].unsqueeze(1))
        scatter(grad_pool_buf[:rk], rows, g_logit, p)
        all_active = bool(active.all())
        user_opt.step(k + 1, ck, None if all_active else active)
        pool_opt.step(k + 1, rk, None if all_active else active[pool_client[:rk]])
        return loss

    return run_local_training(plan, threshold, step)
