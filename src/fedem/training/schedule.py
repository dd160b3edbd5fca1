"""Per-round client samples and the ragged multi-client mini-batch schedule.

A round's local training is the same arithmetic for every client: E epochs over the client's own
samples, shuffled each epoch, in mini-batches of B. Clients are independent within a round, so
the schedule runs all of them in lockstep: at global step k every client with more than k steps
does its (k+1)-th step. Clients are ordered by their number of steps (descending), so the clients
still active at step k are a prefix, and so are their rows in the round's "pool" (the distinct
items a client's samples touch: with a fresh Adam per round, no other row can move)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from fedem.rng import torch_gen


@dataclass
class RoundSamples:
    """Every client's training samples of one round: positives and their negatives."""

    offsets: torch.Tensor  # [C+1] per-client slices of items/labels
    items: torch.Tensor  # [Ns] long
    labels: torch.Tensor  # [Ns] float32
    shuffle_keys: torch.Tensor  # [E, Ns] int64 (40 random bits): sort keys of each epoch's shuffle
    batch_size: int
    device: torch.device
    _plans: dict = field(default_factory=dict, repr=False)

    @property
    def counts(self) -> torch.Tensor:
        return self.offsets[1:] - self.offsets[:-1]

    @property
    def epochs(self) -> int:
        return self.shuffle_keys.shape[0]

    def plan(self, clients: torch.Tensor | None = None) -> RoundPlan:
        """The schedule of `clients` (a CPU long tensor; default: every client). Cached per client
        set, so a method can build its schedules ahead, on the prefetch thread (Method.prefetch)."""
        key = None if clients is None else clients.numpy().tobytes()
        if key not in self._plans:
            chosen = torch.arange(len(self.counts)) if clients is None else clients
            self._plans[key] = build_plan(self, chosen, self.batch_size, self.epochs, self.device)
        return self._plans[key]


def make_round_samples(
    train_indptr: np.ndarray,
    train_items: np.ndarray,
    negatives: np.ndarray,
    epochs: int,
    batch_size: int,
    seed: int,
    round_index: int,
    device: torch.device,
) -> RoundSamples:
    """Per positive: the positive then its k negatives (the authors' order before shuffling)."""
    n, k = negatives.shape
    items = np.concatenate([train_items[:, None], negatives], axis=1).reshape(-1)
    labels = np.zeros((n, 1 + k), dtype=np.float32)
    labels[:, 0] = 1.0
    offsets = train_indptr * (1 + k)
    gen = torch_gen(seed, "batch-order", round_index)
    # 40 random bits per sample and epoch; the client id goes in the bits above (see build_plan)
    keys = torch.randint(0, 1 << 40, (epochs, items.size), generator=gen, dtype=torch.int64)
    return RoundSamples(
        offsets=torch.from_numpy(offsets.astype(np.int64)),
        items=torch.from_numpy(items.astype(np.int64)),
        labels=torch.from_numpy(labels.reshape(-1)),
        shuffle_keys=keys,
        batch_size=batch_size,
        device=device,
    )


@dataclass
class StepBatch:
    rows: torch.Tensor  # [C_k, B] pool row of each sample (padding points at row 0)
    labels: torch.Tensor  # [C_k, B]
    valid: torch.Tensor  # [C_k, B] bool
    count: torch.Tensor  # [C_k] real batch size


@dataclass
class RoundPlan:
    clients: torch.Tensor  # [C] client ids, by number of steps descending
    batches_per_epoch: torch.Tensor  # [C]
    num_steps: torch.Tensor  # [C] = epochs * batches_per_epoch
    active_counts: list[int]  # C_k: clients still scheduled at step k
    pool_items: torch.Tensor  # [R] item of each pool row, rows grouped by client (in `clients` order)
    pool_client: torch.Tensor  # [R] rank (position in `clients`) owning each pool row
    pool_offsets: torch.Tensor  # [C+1]
    steps: list[StepBatch]
    sample_counts: torch.Tensor  # [C] samples per client this round
    # the whole schedule as flat CPU buffers: client c's step k at step_base[k] + c * B (for the
    # client-by-client native kernel; `steps` holds the same values per step)
    flat_rows: torch.Tensor  # [S] long
    flat_labels: torch.Tensor  # [S] float32
    flat_valid: torch.Tensor  # [S] bool
    step_base: torch.Tensor  # [max_steps + 1] long
    batch_size: int

    @property
    def num_clients(self) -> int:
        return int(self.clients.numel())

    def pool_prefix(self, k: int) -> int:
        """Number of pool rows owned by the clients active at step k."""
        return int(self.pool_offsets[self.active_counts[k]])

    def client_batches(self, rank: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(items, labels) of each of one client's steps, in order: the schedule a plain
        per-client loop would follow (used by the reference implementation in the tests)."""
        out = []
        for k in range(int(self.num_steps[rank])):
            step = self.steps[k]
            valid = step.valid[rank]
            out.append((self.pool_items[step.rows[rank][valid]], step.labels[rank][valid]))
        return out


def build_plan(samples: RoundSamples, clients: torch.Tensor, batch_size: int, epochs: int, device) -> RoundPlan:
    """The lockstep schedule of `clients` (any subset, any order) for one round."""
    counts_all = samples.counts
    counts = counts_all[clients]
    batches = (counts + batch_size - 1) // batch_size
    order = torch.argsort(batches, descending=True, stable=True)
    clients = clients[order]
    counts = counts[order]
    batches = batches[order]
    num_steps = batches * epochs
    C = clients.numel()

    # gather this group's samples, grouped by rank
    starts = samples.offsets[clients]
    owner = torch.repeat_interleave(torch.arange(C), counts)
    group_start = torch.cumsum(counts, 0) - counts
    pos = torch.arange(int(counts.sum())) - torch.repeat_interleave(group_start, counts)
    sample_idx = torch.repeat_interleave(starts, counts) + pos
    items = samples.items[sample_idx]
    labels = samples.labels[sample_idx]

    # pool: distinct items per client, rows grouped by rank
    item_count = int(samples.items.max()) + 1 if samples.items.numel() else 1
    key = owner * item_count + items
    uniq, inverse = torch.unique(key, sorted=True, return_inverse=True)
    pool_client = uniq // item_count
    pool_items = uniq % item_count
    pool_sizes = torch.bincount(pool_client, minlength=C)
    pool_offsets = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(pool_sizes, 0)])
    sample_row = inverse  # pool row of each gathered sample

    max_steps = int(num_steps.max()) if C else 0
    active_counts = [int((num_steps > k).sum()) for k in range(max_steps)]
    step_base = np.concatenate([[0], np.cumsum(active_counts)]) * batch_size
    flat_size = int(step_base[-1])
    flat_rows = torch.zeros(flat_size, dtype=torch.long)
    flat_labels = torch.zeros(flat_size, dtype=torch.float32)
    flat_valid = torch.zeros(flat_size, dtype=torch.bool)
    step_base_t = torch.from_numpy(step_base.astype(np.int64))
    # once sorted by (rank, key), the j-th sample sits at position pos[j] of its client's epoch order
    in_block = owner * batch_size + pos % batch_size
    step_in_epoch = pos // batch_size
    batches_of = batches.index_select(0, owner)
    for epoch in range(epochs):
        keys = samples.shuffle_keys[epoch].index_select(0, sample_idx) | (owner << 40)
        perm = torch.from_numpy(np.argsort(keys.numpy(), kind="stable"))
        flat = step_base_t.index_select(0, epoch * batches_of + step_in_epoch) + in_block
        flat_rows.index_copy_(0, flat, sample_row.index_select(0, perm))
        flat_labels.index_copy_(0, flat, labels.index_select(0, perm))
        flat_valid.index_fill_(0, flat, True)

    steps = []
    for k, ck in enumerate(active_counts):
        lo, hi = int(step_base[k]), int(step_base[k + 1])
        valid = flat_valid[lo:hi].view(ck, batch_size)
        steps.append(
            StepBatch(
                rows=flat_rows[lo:hi].view(ck, batch_size).to(device),
                labels=flat_labels[lo:hi].view(ck, batch_size).to(device),
                valid=valid.to(device),
                count=valid.sum(1).to(device=device, dtype=torch.float32),
            )
        )
    return RoundPlan(
        clients=clients,
        batches_per_epoch=batches,
        num_steps=num_steps,
        active_counts=active_counts,
        pool_items=pool_items,
        pool_client=pool_client,
        pool_offsets=pool_offsets,
        steps=steps,
        sample_counts=counts,
        flat_rows=flat_rows,
        flat_labels=flat_labels,
        flat_valid=flat_valid,
        step_base=step_base_t,
        batch_size=batch_size,
    )
