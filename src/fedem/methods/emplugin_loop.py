"""The EM plug-in inside a host's own local loop (GPFedRec, FedRAP): `LoopMerge`, FedEM's two-step
batch (the adapter's step on the host's loss of merged rows, then the host's step on the merged rows)
over the batch's valid samples, which `merge_ragged` merges client by client without padding to the
largest client's batch."""

from __future__ import annotations

import torch

_RAGGED_BUCKET = 64  # clients per padded block of a ragged merge (sorted by sample count: little padding)


def merge_ragged(rule, params: list[torch.Tensor], client: torch.Tensor, local: torch.Tensor, global_: torch.Tensor):
    """merge_rows for ragged samples: sample n [N] belongs to client[n] (ascending; params stacked per
    client [C, ...]). The rule runs on padded blocks of clients of similar sample counts, so a host
    whose batches are mostly padding (FedRAP's 2048) pays for its valid samples only. Every block's rows
    come from one gather, split into the blocks: its backward is one scatter into [N, d], where a gather
    per block costs a zero-filled [N, d] gradient per block (FedRAP's ml-100k steps: 15 of them)."""
    delta = global_ - local
    num_clients = params[0].shape[0] if params else int(client.max()) + 1
    counts = torch.bincount(client, minlength=num_clients)
    starts = torch.cumsum(counts, 0) - counts
    order = torch.argsort(counts, descending=True, stable=True)
    sizes = counts[order].tolist()
    blocks = []  # (clients, sample index [b, m] into the N samples, valid [b, m])
    for lo in range(0, num_clients, _RAGGED_BUCKET):
        if sizes[lo] == 0:
            break
        ids = order[lo : lo + _RAGGED_BUCKET]
        slot = torch.arange(sizes[lo], device=local.device)
        valid = slot < counts[ids].unsqueeze(1)
        blocks.append((ids, torch.where(valid, starts[ids].unsqueeze(1) + slot, 0), valid))
    rho = torch.zeros((local.shape[0], 1), dtype=local.dtype, device=local.device)
    if blocks:
        gather = torch.cat([index.reshape(-1) for _, index, _ in blocks])
        lengths = [index.numel() for _, index, _ in blocks]
        local_blocks = local.index_select(0, gather).split(lengths)
        delta_blocks = delta.index_select(0, gather).split(lengths)
        flat_index, flat_rho = [], []
        for (ids, index, valid), local_b, delta_b in zip(blocks, local_blocks, delta_blocks):
            shape = (*index.shape, local.shape[1])
            block_rho = rule.rho([p.index_select(0, ids) for p in params], local_b.view(shape), delta_b.view(shape))
            flat_index.append(index[valid])
            flat_rho.append(block_rho[valid])
        rho = rho.index_put((torch.cat(flat_index),), torch.cat(flat_rho))
    return local + rho * delta


class LoopMerge:
    """FedEM's two-step batch inside a host's own local loop, for one round of the plan's clients.
    adapter: each client's rule parameters [C, ...] in plan order (trained in place); global_rows: the
    server's table at the pool rows [R, d]. The host passes a mini-batch as its valid samples: client
    [N] (plan rank, ascending), the samples' rows of its own table [N, d] and their pool rows [N]. The
    adapter's step is plain (the host's kind of optimizer at adapter_lr, no schedule, no weight decay),
    as FedEM's own adapter optimizer."""

    def __init__(self, rule, adapter: list[torch.Tensor], global_rows: torch.Tensor, optimizer):
        self.rule, self.adapter, self.global_rows = rule, adapter, global_rows
        self.optimizer = optimizer.make("adapter", adapter)

    def adapter_step(self, k, ck, client_mask, client, local, pool_rows, loss_of) -> None:
        """One step of the first ck clients' adapters on loss_of(merged rows [N, d]) [ck]."""
        leaves = [p[:ck].detach().requires_grad_() for p in self.adapter]
        merged = merge_ragged(self.rule, leaves, client, local.detach(), self.global_rows.index_select(0, pool_rows))
        grads = torch.autograd.grad(loss_of(merged).sum(), leaves)
        for i, g in enumerate(grads):
            self.optimizer.grads[i][:ck].copy_(g)
            self.optimizer.step_one(i, k + 1, ck, client_mask, 1.0)

    def merged(self, ck, client, local, pool_rows) -> torch.Tensor:
        """The samples' merged rows [N, d] with the adapters as they are now (fixed inputs)."""
        params = [p[:ck] for p in self.adapter]
        return merge_ragged(self.rule, params, client, local, self.global_rows.index_select(0, pool_rows))
