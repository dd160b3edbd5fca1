"""Server-side aggregation: FedAvg over any named shared parameters, its sparse form over the item rows a
round touched, and FedEM's personalised step as matrix algebra (FEDEM.md, "Server, once per round")."""

from __future__ import annotations

import torch

from fedem.numerics.simplex import project_rows_to_simplex
from fedem.training.schedule import RoundPlan


def sample_weights(counts: torch.Tensor) -> torch.Tensor:
    """FedAvg weights n_u / sum n (n_u: a client's training samples this round)."""
    n = counts.to(torch.float32)
    return n / n.sum()


def fedavg(uploads: dict[str, torch.Tensor], weights: torch.Tensor) -> dict[str, torch.Tensor]:
    """The weighted mean over the client axis of every named shared parameter: uploads[name] [C, ...],
    weights [C] summing to 1."""
    return {name: torch.tensordot(weights.to(t.dtype), t, dims=1) for name, t in uploads.items()}


def fedavg_rows(table: torch.Tensor, plan: RoundPlan, trained: torch.Tensor, received: torch.Tensor) -> None:
    """FedAvg of a shared item table, in place, when clients train only their pool rows:
    sum_u w_u T_u = G + sum_u w_u (T_u - G), nonzero only on each client's pool rows.
    table [I, d] (the server's G); trained, received [R, d] (the plan's pool rows after and before)."""
    device = table.device
    weights = sample_weights(plan.sample_counts.to(device))[plan.pool_client.to(device)]
    table.index_add_(0, plan.pool_items.to(device), weights.unsqueeze(1) * (trained - received))


def pca_projection(tables: torch.Tensor) -> torch.Tensor:
    """tables [S, I, d] -> c [S, I]: rows centred over items, projected on the first principal
    direction. The direction's sign is fixed (largest-magnitude component positive); the
    authors' raw SVD sign is arbitrary."""
    centred = tables - tables.mean(dim=1, keepdim=True)
    cov = centred.double().transpose(1, 2) @ centred.double()
    _, vecs = torch.linalg.eigh(cov)
    top = vecs[:, :, -1]
    pivot = top.abs().argmax(dim=1, keepdim=True)
    top = top * torch.sign(top.gather(1, pivot))
    return (centred @ top.to(tables.dtype).unsqueeze(-1)).squeeze(-1)


def similarity(c: torch.Tensor, mode: str, clip: float) -> torch.Tensor:
    if mode == "l2":
        sq = (c * c).sum(dim=1, keepdim=True)
        dist = torch.sqrt(torch.clamp(sq + sq.T - 2 * c @ c.T, min=0))
        sim = 1 / (dist + 1)
    elif mode == "cos":
        unit = torch.nn.functional.normalize(c, p=2, dim=1)
        sim = (unit @ unit.T).clamp(min=0)
    else:
        raise ValueError(f"unknown sim_mode '{mode}'")
    sim[sim > clip] = 1
    return sim


def aggregation_matrix(tables: torch.Tensor, sample_counts: torch.Tensor, hp: dict) -> torch.Tensor:
    """W [S, S] for the aggregation set: avg (rows = p), sim (row-normalised similarity), or both
    (row i = simplex projection of p + alpha sim_i, the exact solution of the authors' QP)."""
    p = sample_counts.to(tables.dtype) / sample_counts.sum()
    mode = hp["agg_mode"]
    if mode == "avg":
        w = p.unsqueeze(0).expand(len(p), -1).clone()
    else:
        sim = similarity(pca_projection(tables), hp["sim_mode"], hp["sim_clip"])
        w = sim if mode == "sim" else project_rows_to_simplex(p.unsqueeze(0) + hp["alpha"] * sim)
    w = torch.where(w.abs() < 1e-20, torch.zeros_like(w), w)
    return w / w.sum(dim=1, keepdim=True)
