"""FedEM's elastic-merging adapter, batched over clients: an MLP per client maps
concat(L[i], G[i] - L[i]) to rho_i in (0, 1); merged row = L[i] + rho_i (G[i] - L[i])."""

from __future__ import annotations

import torch

from fedem.training.backbone import Backbone, ParamSpec, closed_form_covers
from fedem.training.backbones import init_linear_stack
from fedem.training.local_loop import run_local_training
from fedem.training.optim import StackedAdam


def init_adapter(layers: list[int], seed: int) -> list[torch.Tensor]:
    """One template (nn.Linear's default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and
    bias), as [W1, b1, W2, b2, ...]; every client starts from it."""
    return init_linear_stack(layers, seed, "init-adapter")


def adapter_names(layers: list[int]) -> tuple[str, ...]:
    return tuple(f"adapter.{i // 2}.{'weight' if i % 2 == 0 else 'bias'}" for i in range(2 * (len(layers) - 1)))


def adapter_rho(params: list[torch.Tensor], local: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """params: stacked [C, out, in] / [C, out]; local, delta [C, N, d] -> rho [C, N, 1]."""
    h = torch.cat((local, delta), dim=-1)
    n_layers = len(params) // 2
    for layer in range(n_layers):
        w, b = params[2 * layer], params[2 * layer + 1]
        h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
        h = torch.relu(h) if layer < n_layers - 1 else torch.sigmoid(h)
    return h


def merge(params: list[torch.Tensor], local: torch.Tensor, global_: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Merged rows and rho: local + rho (global - local)."""
    delta = global_ - local
    rho = adapter_rho(params, local, delta)
    return local + rho * delta, rho


def merged_forward_backward(
    params: list[torch.Tensor],
    local: torch.Tensor,
    global_: torch.Tensor,
    user: torch.Tensor,
    labels: torch.Tensor,
    valid: torch.Tensor,
    count: torch.Tensor,
    want: str,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Loss and closed-form gradients of FCF scored on merged rows, for a batch of clients.

    local/global_ [C, B, d], user [C, d]. want='adapter' -> grads of params (step (a));
    want='embeddings' -> [grad wrt the local rows [C, B, d], grad wrt user [C, d]] (step (b)).
    Gradients reach the local rows through both (1 - rho) and the adapter's input, exactly as
    autograd does for the authors' module (checked against it in the tests)."""
    from fedem.numerics.bce import bce_forward_backward

    delta = global_ - local
    x = torch.cat((local, delta), dim=-1)
    n_layers = len(params) // 2
    inputs, pre = [x], []
    h = x
    for layer in range(n_layers):
        w, b = params[2 * layer], params[2 * layer + 1]
        z = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
        pre.append(z)
        h = torch.relu(z) if layer < n_layers - 1 else torch.sigmoid(z)
        inputs.append(h)
    rho = h  # [C, B, 1]
    merged = local + rho * delta
    logits = torch.bmm(merged, user.unsqueeze(2)).squeeze(2)
    _, loss, g_logit = bce_forward_backward(logits, labels, valid, count)
    d_merged = g_logit.unsqueeze(-1) * user.unsqueeze(1)
    d_z = (d_merged * delta).sum(-1, keepdim=True) * rho * (1 - rho)  # through the sigmoid
    grads_params: list[torch.Tensor] = [None] * len(params)  # type: ignore[list-item]
    for layer in reversed(range(n_layers)):
        w = params[2 * layer]
        if want == "adapter":
            grads_params[2 * layer] = torch.bmm(d_z.transpose(1, 2), inputs[layer])
            grads_params[2 * layer + 1] = d_z.sum(1)
        d_h = torch.bmm(d_z, w)
        if layer > 0:
            d_z = d_h * (pre[layer - 1] > 0)
    if want == "adapter":
        return loss, grads_params
    d = local.shape[-1]
    d_local = d_merged * (1 - rho) + d_h[..., :d] - d_h[..., d:]
    d_user = torch.bmm(g_logit.unsqueeze(1), merged).squeeze(1)
    return loss, [d_local, d_user]


# FedEM's merged clients take two optimizer steps per mini-batch: the adapter first, then a fresh
# forward and a step on (p_u, L_u) (FEDEM.md, "One round t")
MERGED_STEPS = (("adapter",), ("embedding",))


class MergedFCF(Backbone):
    """FCF scored on merged rows: logit = <p_u, L_u[i] + rho (G_u[i] - L_u[i])>, the merge rule's
    parameters private (FedEM's elastic rule: the adapter), L_u the client's table (uploaded), G_u the
    rows the server sent (a fixed input of the round). `rule`: a fedem.methods.merging.MergeRule."""

    def __init__(self, rule):
        self.rule = rule
        self.adapter_names = rule.names
        self.specs = (
            ParamSpec("user"),
            ParamSpec("items", item_rows=True, shared=True),
            ParamSpec("global_items", item_rows=True, lr_group=None),
            *(ParamSpec(n, lr_group="adapter") for n in self.adapter_names),
        )

    def logits(self, p):
        local = p["items"]
        delta = p["global_items"] - local
        merged = local + self.rule.rho([p[n] for n in self.adapter_names], local, delta) * delta
        return torch.bmm(merged, p["user"].unsqueeze(2)).squeeze(2)

    def fast_path(self, kernels, device, optimizer, rows, step_groups):
        # the closed form and the native loop are written for the adapter MLP (FedEM's elastic rule)
        if self.rule.kind != "elastic" or kernels == "autograd":
            return None
        if not closed_form_covers(optimizer, rows, step_groups, MERGED_STEPS):
            return None
        names = self.adapter_names

        def fast(plan, tensors, opt, threshold):
            adapter = [tensors[n] for n in names]
            adam = {"beta1": opt.betas[0], "beta2": opt.betas[1], "eps": opt.eps}
            args = (plan, tensors["items"], tensors["global_items"], tensors["user"], adapter)
            args += (opt.lrs["embedding"], opt.lrs["adapter"], adam, threshold)
            if kernels == "native" and device.type == "cpu":
                from fedem.numerics.native.merged_train import train_merged_clients

                return train_merged_clients(*args)
            return train_merged_closed_form(*args, compiled=kernels != "eager")

        return fast


def train_merged_closed_form(
    plan, pool_l, pool_g, users, adapter, lr_embedding, lr_adapter, adam, threshold, compiled: bool
) -> torch.Tensor:
    """The lockstep torch path of the merged clients' local training, gradients in closed form."""
    from fedem.numerics.compiled import index_add_rows, maybe_compiled

    d = pool_l.shape[1]
    betas = (adam["beta1"], adam["beta2"], adam["eps"])
    pool_client = plan.pool_client.to(pool_l.device)
    # the adapter's step is compute-bound (small batched GEMMs): compiling it and the merged
    # forward/backward saved ~15 % of this group's time but cost ~40 s of compiling a run
    adapter_opt = StackedAdam(adapter, lr_adapter, *betas, compiled=False)
    user_opt = StackedAdam([users], lr_embedding, *betas, compiled=compiled)
    pool_opt = StackedAdam([pool_l], lr_embedding, *betas, compiled=compiled)
    grad_pool = pool_opt.grads[0]
    add_rows = maybe_compiled(index_add_rows, compiled)

    def step(k, batch, active):
        ck, rk = plan.active_counts[k], plan.pool_prefix(k)
        mask = None if bool(active.all()) else active
        row_mask = None if mask is None else active[pool_client[:rk]]
        rows = batch.rows.reshape(-1)
        g_rows = pool_g.index_select(0, rows).view(ck, -1, d)
        batch_args = (batch.labels, batch.valid, batch.count)
        # (a) one Adam step on the adapter only
        l_rows = pool_l.index_select(0, rows).view(ck, -1, d)
        _, grads = merged_forward_backward(
            [p[:ck] for p in adapter], l_rows, g_rows, users[:ck], *batch_args, want="adapter"
        )
        for buf, grad in zip(adapter_opt.grads, grads):
            buf[:ck].copy_(grad)
        adapter_opt.step(k + 1, ck, mask)
        # (b) a fresh forward with the updated adapter; one Adam step on (p_u, L_u)
        loss, (grad_rows, grad_user) = merged_forward_backward(
            [p[:ck] for p in adapter], l_rows, g_rows, users[:ck], *batch_args, want="embeddings"
        )
        add_rows(grad_pool[:rk], rows, grad_rows.reshape(-1, d))
        user_opt.grads[0][:ck].copy_(grad_user)
        user_opt.step(k + 1, ck, mask)
        pool_opt.step(k + 1, rk, row_mask)
        return loss

    return run_local_training(plan, threshold, step)
